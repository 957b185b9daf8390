"""instructor against a running Sluice, in each of its modes: JSON and
MD_JSON prompt with the schema (the mock answers an object satisfying it),
TOOLS asks for a tool call, JSON_SCHEMA for structured output.

Usage: python instructor_compat.py BASE_URL KEY
"""

import sys

import instructor
from openai import OpenAI
from pydantic import BaseModel

from compat_checks import Checks

base_url, key = sys.argv[1], sys.argv[2]
checks = Checks()


class City(BaseModel):
    name: str
    country: str
    population: int
    districts: list[str]


def extract(mode):
    def body():
        client = instructor.from_openai(OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=10), mode=mode)
        city = client.chat.completions.create(
            model="gpt-4o-mini", response_model=City, max_retries=0,
            messages=[{"role": "user", "content": "Paris, France, 2.1 million people"}],
        )
        return isinstance(city, City), city
    return body


for mode in [instructor.Mode.JSON, instructor.Mode.MD_JSON, instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA]:
    checks.check(f"instructor {mode.value}", extract(mode))
checks.finish()
