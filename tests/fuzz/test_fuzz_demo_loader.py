"""DemoModelLoader against hostile weight names, on the real server: names outside its list, paths
out of its folder, a file in its folder that holds no weights."""

from fuzzlib import Combo, Table, table_tests, loader_prompt

TABLE = Table("ExpanseDemoModelLoader", "model", loader_prompt, [
    Combo("weights", bad=("not_an_option", "", 3, "../../README.md", "evaluation.json",
                          "../weights/expanse-demo.safetensors", "/etc/hostname")),
])
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
