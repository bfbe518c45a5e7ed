"""DemoModelLoader against hostile weight names, on the real server: names outside its list, paths
out of its folder, a file in its folder that holds no weights."""
import numpy as np
import pytest

from fuzzlib import Combo, Table, check, loader_prompt

TABLE = Table("ExpanseDemoModelLoader", "model", loader_prompt, [
    Combo("weights", bad=("not_an_option", "", 3, "../../README.md", "evaluation.json",
                          "../weights/expanse-demo.safetensors", "/etc/hostname")),
])
CASES = TABLE.cases()


def test_the_table_follows_the_nodes_inputs(object_info):
    assert not TABLE.schema_problems(object_info)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_value(runner, case):
    check(runner, case)


def test_the_server_still_draws_the_good_prompt(runner, good_picture):
    assert np.array_equal(runner.picture(TABLE.build()), good_picture)
