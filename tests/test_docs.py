"""Docs that are made from the code stay in step with it."""

import re
import runpy
from pathlib import Path

from cacheproxy.config import load_config

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_reference_is_up_to_date():
    generator = runpy.run_path(str(DOCS / "gen_configuration.py"))
    written = (DOCS / "configuration.md").read_text()
    assert written == generator["render"](), "run: .venv/bin/python docs/gen_configuration.py"


def test_every_toml_example_in_the_reference_loads(tmp_path):
    examples = re.findall(r"```toml\n(.*?)```", (DOCS / "configuration.md").read_text(), re.S)
    assert len(examples) == 2
    for number, example in enumerate(examples):
        file = tmp_path / f"example{number}.toml"
        file.write_text(example)
        config = load_config({}, {"INTERNAL_INDEX_TOKEN": "s3cret-token"}, file)
        assert config.indexes or config.port == 3145
