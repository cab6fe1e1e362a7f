"""The Space's own files: front matter a Hub Space accepts, requirements pip can parse, and a README that
lists exactly the endpoints the running app serves."""

from __future__ import annotations

import re
from pathlib import Path

import gradio
import yaml
from packaging.requirements import Requirement

SPACES = Path(__file__).resolve().parents[2] / "spaces"


def front_matter() -> dict:
    text = (SPACES / "README.md").read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "spaces/README.md must start with YAML front matter between --- lines"
    return yaml.safe_load(match.group(1))


def test_front_matter_describes_a_gradio_space():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert (SPACES / meta["app_file"]).is_file()
    assert isinstance(meta["models"], list) and all(
        re.fullmatch(r"[\w.-]+/[\w.-]+", m) for m in meta["models"]
    )
    assert len(meta["short_description"]) <= 60  # the Hub's limit


def test_requirements_parse():
    lines = [line.strip() for line in (SPACES / "requirements.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    names = {r.name for r in requirements}
    assert {"pathfm", "gradio", "openslide-python", "openslide-bin"} <= names
    assert next(r for r in requirements if r.name == "gradio").specifier.contains(gradio.__version__)


def test_readme_lists_exactly_the_served_endpoints(space_client):
    served = set(space_client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    readme = (SPACES / "README.md").read_text()
    table = readme.split("## API", 1)[1].split("```", 1)[0]
    documented = set(re.findall(r"^\| `(/\w+)` \|", table, re.MULTILINE))
    assert documented == served
