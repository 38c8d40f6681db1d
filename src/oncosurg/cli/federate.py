"""``oncosurg federate``: a study protocol across centres, pooled from aggregates (vantage6, in-process)."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import click

from oncosurg.cli import UserError, allow_empty_option, cli, json_option, protocol_option


class FederationFailed(click.ClickException):
    """A site failed or refused: no pooled result (exit status 4)."""

    exit_code = 4


def _sites(values: tuple[str, ...]) -> dict[str, str]:
    from oncosurg.federated.site import registry_url

    sites: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise UserError(f"--site {value!r}: expected NAME=URL, e.g. --site leuven=sqlite:///leuven.db")
        if name in sites:
            raise UserError(f"--site {name}: the name is given twice; each site needs its own name")
        try:
            registry_url(url.strip())  # a missing SQLite file is refused here, never created
        except FileNotFoundError as exc:
            raise UserError(f"--site {name}: {exc}") from None
        sites[name.strip()] = url.strip()
    return sites


def run_mock(sites: dict[str, str], protocol_text: str, source: str, *, threshold: int, small_site: str
             ) -> dict[str, Any]:
    """The algorithm's central function at the first site through vantage6's ``MockAlgorithmClient``: one
    organisation per site, each holding its registry URL; partials run in-process, synchronously."""
    try:
        import pandas as pd
        import v6_oncosurg  # noqa: F401  (the algorithm package, federated/v6-oncosurg)
        from vantage6.algorithm.tools.mock_client import MockAlgorithmClient
    except ImportError as exc:
        raise UserError(f"oncosurg federate needs the vantage6 algorithm tools and the oncosurg algorithm ({exc}); "
                        "install them with `make .venv/.v6-installed-stamp` (docs/federated.md)") from None
    datasets = [[{"database": pd.DataFrame({"registry_url": [url]})}] for url in sites.values()]
    chatter = io.StringIO()  # vantage6's `info >` lines go to stdout; keep --json clean
    with contextlib.redirect_stdout(chatter):
        client = MockAlgorithmClient(datasets=datasets, module="v6_oncosurg")
        orgs = [org["id"] for org in client.organization.list()]
        task = client.task.create(input_={"method": "central_analyze",
                                          "kwargs": {"protocol_toml": protocol_text, "protocol_source": source,
                                                     "organizations": orgs, "site_names": list(sites),
                                                     "threshold": threshold, "small_site": small_site}},
                                  organizations=[orgs[0]])
        return client.wait_for_results(task_id=task["id"])[0]


@cli.command("federate")
@protocol_option
@click.option("--site", "site_args", multiple=True, required=True, metavar="NAME=URL",
              help="A centre and its registry (sqlite:///path.db or postgresql://…); repeat for each centre.")
@click.option("--threshold", type=click.IntRange(min=1), default=3, show_default=True,
              help="Minimum cell count a site releases (DataSHIELD nfilter.tab); 1 releases everything at full "
                   "resolution.")
@click.option("--small-site", type=click.Choice(["refuse", "suppress"]), default="refuse", show_default=True,
              help="A site with fewer patients than the threshold: refuse the run, or pool the others and name it.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the result JSON to FILE (for `oncosurg report --results FILE`).")
@allow_empty_option
@json_option
def federate_cmd(protocol: str, site_args: tuple[str, ...], threshold: int, small_site: str, out: str | None,
                 allow_empty: bool, as_json: bool) -> None:
    """Run a study protocol at several centres and pool the aggregates, as vantage6 would.

    Each --site is one registry (one centre). The vantage6 algorithm (federated/v6-oncosurg) runs
    in-process through vantage6's MockAlgorithmClient: every site runs the protocol on its own
    registry and returns aggregates only, checked against the disclosure threshold; the central
    function pools them. Prints the `analyze` table (--json: the analyze JSON with a per-site
    breakdown and a disclosure section). A site that fails or refuses stops the run with exit
    status 4 and names the site; nothing is pooled from the others (docs/federated.md).
    """
    from oncosurg.protocol.model import ProtocolError, load_protocol, resolve_protocol

    try:
        load_protocol(protocol)
        path = resolve_protocol(protocol)
    except ProtocolError as exc:
        raise UserError(str(exc)) from None
    sites = _sites(site_args)
    result = run_mock(sites, path.read_text(encoding="utf-8"), str(path), threshold=threshold, small_site=small_site)
    if "error" in result:
        if as_json:
            click.echo(json.dumps(result, indent=2))
        raise FederationFailed(result["error"])
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _render(result)
    if result["cohort"]["n"] == 0 and not allow_empty:
        from oncosurg.cli import EmptyCohort

        raise EmptyCohort("the pooled cohort is empty (n = 0); pass --allow-empty to accept an empty cohort.")


def _render(result: dict[str, Any]) -> None:
    from oncosurg.report.terminal import render_results

    render_results(result)
    click.echo("\nSites:")
    for site in result["sites"]:
        click.echo(f"  {site['name']}: {site['status']}" + (f", {site['cohort_n']} in the cohort"
                                                          if site.get("cohort_n") is not None else ""))
    d = result["disclosure"]
    coarsened = sum(1 for i in d["items"] if i["action"] == "coarsened")
    withheld = sum(1 for i in d["items"] if i["action"] in ("withheld", "refused"))
    click.echo(f"Disclosure (threshold {d['threshold']}): {withheld} quantity(ies) withheld, {coarsened} coarsened; "
               "--json lists them.")
