"""`infu`: one command per stage of the InfU data engine."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.config import load_config


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """The open InfU data engine: curate portrait data, synthesise SPMS pairs, train and run InfU.

    Every command runs on an embedded local Ray by default; pass --ray-address
    (or run it under `ray job submit`) to use a cluster.
    """


@main.command()
@click.option("--source", "sources", multiple=True, required=True, metavar="KIND[:LABEL]=PATH",
              help="A dataset to curate, repeatable. KIND is one of vggface2, millioncelebs, celeba, "
                   "celebv_hq, ffhq, vfhq, easyportrait, celebv_text, cosmicmanhq, folder. "
                   "LABEL names the source in the output (default: KIND); use it to give one KIND twice.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: kept/, rejected/, stats.json, config.yaml. Rerunning the same "
                   "command on it resumes an interrupted run.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML merged over the defaults in configs/curate.yaml (thresholds, stages, buckets).")
@click.option("--ray-address", default=None, metavar="ADDR",
              help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of starting an embedded one.")
@click.option("--overwrite", is_flag=True,
              help="Delete what DIR holds and start over (needed when the config or sources changed).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def curate(sources, out_dir, config_path, ray_address, overwrite, quiet) -> None:
    """Filter portrait datasets into clean, accounted SPSS Parquet.

    Each input image (or sampled video frame) ends in exactly one of
    DIR/kept/*.parquet or DIR/rejected/*.parquet (with its status and reason);
    DIR/stats.json adds them up per source and reason.
    """
    from pipelines.curate import ConfigMismatch, SourceSpec, run_curate
    from pipelines.summary import format_curate_summary

    try:
        specs = [SourceSpec.parse(s) for s in sources]
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    cfg = load_config("curate", config_path, {"progress": False} if quiet else None)
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        stats = run_curate(specs, out_dir, cfg, ray_address=ray_address, overwrite=overwrite, log=log)
    except (ConfigMismatch, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(format_curate_summary(stats, out_dir))
    if stats["inputs"] == 0:
        click.echo("nothing was curated: no source yielded any image", err=True)
        sys.exit(1)


@main.command("sample-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
def sample_data(out_dir) -> None:
    """Write a small folder of real photos that ship inside installed packages
    (scikit-image, matplotlib, insightface) and hard cases derived from them
    (resized duplicate, EXIF rotation, 16-bit, CMYK, palette, alpha, blur, a strip,
    a small face on a big canvas, truncated / non-image / empty files, a decompression bomb)."""
    from curation.samples import write_sample_set

    files = write_sample_set(out_dir)
    click.echo(f"wrote {len(files)} files to {Path(out_dir).resolve()}")


if __name__ == "__main__":
    main()
