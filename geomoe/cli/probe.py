"""`geomoe probe`: linear probes on frozen embeddings (BigEarthNet sample or a class-folder set),
or on an embedding cube with labels from a vector file (``--cube --labels --label-column``)."""

from __future__ import annotations

import argparse

from geomoe.options import fraction, int_at_least, non_negative_int, positive_float, positive_int
from geomoe.model.config import POOLINGS, SIZES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe", help="linear-probe frozen embeddings (mAP / accuracy with spread)",
        description="Embed a labelled chip set with a frozen encoder and fit StandardScaler + "
        "LogisticRegression (one-vs-rest for multi-label) in repeated stratified k-fold. "
        "Default data: the bundled BigEarthNet-Landsat sample; default model: the demo checkpoint. "
        "With --cube: probe the embeddings of a cube with labels from a vector file (points take "
        "the chip they fall in; polygons the chips they cover, or whose centre they hold), "
        "random and spatially blocked CV, and a prediction map of the whole cube "
        "(REPORT.zarr and REPORT.png beside the report).",
    )
    c = p.add_argument_group("probe on an embedding cube")
    c.add_argument("--cube", default=None, help="embedding cube (embed-region --out) to probe")
    c.add_argument("--labels", default=None,
                   help="vector file geopandas reads (GeoPackage, GeoParquet, GeoJSON, Shapefile), "
                   "any CRS, points or polygons")
    c.add_argument("--label-column", default=None, help="column of --labels holding the class")
    c.add_argument("--label-separator", default=None,
                   help="split text labels on this into several classes: multi-label (e.g. ';'); "
                   "list-valued columns are multi-label without it")
    c.add_argument("--time", default=None,
                   help="date window of the cube: YYYY-MM-DD, YYYY-MM, YYYY or START/END (default: "
                   "every date; per-chip median where a chip has several)")
    c.add_argument("--polygon-rule", default="covers", choices=["covers", "centre"],
                   help="chips a polygon labels: those it covers entirely (default) or those whose "
                   "centre it holds")
    c.add_argument("--block-size", type=positive_float, default=None,
                   help="side of the spatial CV blocks in metres (default 6000: 5 x 5 chips)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--checkpoint", default=None,
                     help="geomoe or published checkpoint (default: checkpoints/geomoe-demo-S.safetensors)")
    who.add_argument("--random-init", action="store_true", help="probe randomly initialised weights")
    p.add_argument("--size", default=None, choices=list(SIZES),
                   help="model size for --random-init (default S); with --checkpoint it must match")
    p.add_argument("--pooling", default="mean", choices=POOLINGS,
                   help="mean of all 105 raw tokens (published protocol), CLS, or patch mean")
    p.add_argument("--report", required=True,
                   help="report .json (a .csv and .png go beside it; with --cube also the "
                   "prediction map .zarr)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a geomoe probe report at --report (.json, .csv, .png); files "
                   "geomoe did not write there are never replaced")
    p.add_argument("--catalog", default=None,
                   help="static catalog/collection of items with 'bigearthnet:labels_19' "
                   "(default: the bundled BigEarthNet-Landsat sample)")
    p.add_argument("--dataset-dir", default=None,
                   help="folder of GeoTIFFs per class (EuroSAT-Landsat layout root/<class>/*.tif): "
                   "multi-class accuracy instead of mAP")
    p.add_argument("--folds", type=int_at_least(2), default=5, help="k of the k-fold (default 5)")
    p.add_argument("--repeats", type=positive_int, default=5, help="repetitions of the k-fold (default 5)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of splits and random init (0)")
    p.add_argument("--min-valid", type=fraction, default=0.9, help="skip chips under this valid fraction")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not also probe random weights of the same size on the same folds")
    p.add_argument("--no-metadata", action="store_true",
                   help="embed without week/hour/lat/lon (zeros, as the published EuroSAT probe)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geomoe.evaluate.probe import run_probe

    if args.cube is not None or args.labels is not None or args.label_column is not None:
        rep = run_probe(
            cube=args.cube, labels=args.labels, label_column=args.label_column,
            report=args.report, time=args.time, polygon_rule=args.polygon_rule,
            label_separator=args.label_separator, block_size=args.block_size,
            n_folds=args.folds, seed=args.seed, overwrite=args.overwrite,
            checkpoint=args.checkpoint, random_init=args.random_init, catalog=args.catalog,
            dataset_dir=args.dataset_dir)
        print(rep["summary"])
        print(f"report -> {args.report} (+ .csv, .zarr prediction map, .png)")
        return 0
    rep = run_probe(
        checkpoint=args.checkpoint, random_init=args.random_init, size=args.size,
        pooling=args.pooling, catalog=args.catalog, dataset_dir=args.dataset_dir,
        n_folds=args.folds, n_repeats=args.repeats, seed=args.seed,
        baseline=not args.no_baseline, use_metadata=not args.no_metadata, report=args.report,
        min_valid=args.min_valid, overwrite=args.overwrite,
    )
    print(rep["summary"])
    c = rep["counts"]
    if "unlabelled_excluded" in c:
        print(f"  {c['items']} items: {c['samples']} probed, {c['unlabelled_excluded']} unlabelled "
              f"and {c['invalid_excluded']} invalid (fill/cloud) excluded")
    print(f"report -> {args.report} (+ .csv, .png)")
    return 0
