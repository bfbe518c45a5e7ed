import pathlib
import sys

# reference_vae.py, the whole-image oracle, sits beside the unit tests.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
