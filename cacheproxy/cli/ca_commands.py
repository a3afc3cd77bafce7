"""``cacheproxy ca``: the transparent face's certificate authority. Prints the certificate
(never the key), or makes the CA before the first start so its certificate can be handed out."""

from __future__ import annotations

import click

from cacheproxy.cli.options import CONFIG_OPTION, fail, load_settings, setting
from cacheproxy.config import Config
from cacheproxy.errors import CaError
from cacheproxy.http.trust import ca_dir, ca_hosts


def _config(ctx: click.Context, flags: dict[str, str | None], config_file: str | None) -> Config:
    # The group's --cache-dir/--config count when the subcommand is given none.
    parent = ctx.find_object(dict) or {}
    if flags.get("cache_dir") is None:
        flags["cache_dir"] = parent.get("cache_dir")
    return load_settings(flags, config_file or parent.get("config_file"))


def _show(config: Config, only_fingerprint: bool) -> None:
    from cryptography import x509  # loaded by the commands that need it, not by every one

    from cacheproxy.http.ca import CertificateAuthority, fingerprint

    directory = ca_dir(config)
    pem = CertificateAuthority.read_certificate(directory)
    if pem is None:
        fail(f"no CA in {directory}: 'cacheproxy ca init' makes one (so does the first serve)")
        return
    if only_fingerprint:
        try:
            click.echo(fingerprint(x509.load_pem_x509_certificate(pem)))
        except ValueError:
            fail(f"{directory / 'ca.pem'} is not a PEM certificate")
        return
    click.echo(pem.decode("ascii", "replace"), nl=False)


FINGERPRINT_OPTION = click.option(
    "--fingerprint", "only_fingerprint", is_flag=True, help="Print only its SHA-256 fingerprint."
)


@click.group(invoke_without_command=True)
@setting("cache_dir", "The cache whose CA it is (the CA lives in its ca/ directory).")
@CONFIG_OPTION
@FINGERPRINT_OPTION
@click.pass_context
def ca(ctx: click.Context, config_file: str | None, only_fingerprint: bool, cache_dir) -> None:
    """The CA of the transparent HTTPS face: with no command, print its certificate (PEM).

    The certificate is public: hand it to clients (or use 'cacheproxy env --transparent').
    The key stays in the cache's ca/ directory, readable by its owner only."""
    ctx.obj = {"cache_dir": cache_dir, "config_file": config_file}
    if ctx.invoked_subcommand is None:
        _show(_config(ctx, {"cache_dir": cache_dir}, config_file), only_fingerprint)


@ca.command()
@setting("cache_dir", "The cache whose CA it is.")
@CONFIG_OPTION
@FINGERPRINT_OPTION
@click.pass_context
def show(ctx: click.Context, config_file: str | None, only_fingerprint: bool, cache_dir) -> None:
    """Print the CA certificate (PEM), or its fingerprint."""
    _show(_config(ctx, {"cache_dir": cache_dir}, config_file), only_fingerprint)


@ca.command()
@setting("cache_dir", "The cache whose CA it is.")
@setting("upstream", "The upstream whose host the CA vouches for when no --host is given.")
@CONFIG_OPTION
@click.option(
    "--host",
    "--intercept-host",
    "hosts",
    multiple=True,
    metavar="HOST",
    help="A package host the CA may vouch for (a name, *.domain or an address); repeatable. "
    "Default: the configured upstreams' hosts and file hosts.",
)
@click.option(
    "--renew",
    is_flag=True,
    help="Make a new CA even if the one there covers the hosts (to narrow it, or if its key "
    "may have leaked); clients must then trust the new certificate.",
)
@click.pass_context
def init(
    ctx: click.Context,
    config_file: str | None,
    hosts: tuple[str, ...],
    renew: bool,
    cache_dir,
    upstream,
) -> None:
    """Make the CA (or keep the one there if it covers the hosts) and print its fingerprint."""
    from cacheproxy.http.ca import CertificateAuthority

    config = _config(ctx, {"cache_dir": cache_dir, "upstream": upstream}, config_file)
    wanted = list(hosts) or ca_hosts(config)  # the package hosts, as serve makes it
    directory = ca_dir(config)
    try:
        authority = CertificateAuthority.open(directory, wanted, renew=renew)
    except (CaError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot make the CA in {directory}: {exc.strerror or exc}")
    if not authority.created:
        click.echo(f"kept the CA at {authority.cert_path}")
    elif authority.previous_fingerprint is None:
        click.echo(f"made a CA at {authority.cert_path}")
    else:
        click.echo(f"made a new CA at {authority.cert_path}")
        click.echo(
            f"the previous one ({authority.previous_fingerprint}) is kept as ca.pem.old, its "
            "key deleted: clients that trusted it must trust the new certificate"
        )
    click.echo(f"SHA-256 fingerprint: {authority.fingerprint}")
    click.echo(f"vouches for: {', '.join(authority.permitted or ['any name'])}")
    click.echo(f"issues certificates for: {', '.join(authority.hosts.hosts())}")
