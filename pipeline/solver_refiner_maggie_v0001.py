"""Train the refiner with the original v0001 staged curriculum (pipeline/configs/maggie_v0001.yaml): coarse
warm-up at 1/8 scale, structure correction, transition, fine detail, alpha-domain losses only.

Same loop, flags and run folder as pipeline/solver_refiner_maggie.py; only the schedule and loss weights differ.
"""


import utils.offline  # noqa: F401  (first: offline switches)
from pipeline.solver import main as solver_main
from utils.cli import run_main


def main(argv=None) -> int:
    return solver_main(argv, defaults_yaml="maggie_v0001.yaml")


if __name__ == "__main__":
    run_main(main)
