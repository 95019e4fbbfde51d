"""Train the refiner with the newer strategy: structure first, then detail (pipeline/configs/maggie.yaml).

    python pipeline/solver_refiner_maggie.py --root data/demo --name my_run --model heavy_db2 --batch_size 8
    torchrun --nproc_per_node 4 pipeline/solver_refiner_maggie.py ...     # DDP, no code change
    python pipeline/solver_refiner_maggie.py --name my_run --resume       # continue a killed run

The loop is pipeline/solver.py; every key of its TrainConfig (pipeline/train_config.py) is a flag.
"""


import utils.offline  # noqa: F401  (first: offline switches)
from pipeline.solver import main as solver_main
from utils.cli import run_main


def main(argv=None) -> int:
    return solver_main(argv, defaults_yaml="maggie.yaml")


if __name__ == "__main__":
    run_main(main)
