import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "linkd" / "version.py").read_text()).group(1)

setup(
    name="linkd",
    version=VERSION,
    description="Account-linking daemon: OAuth connect flows for several platforms under one user UUID",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["linkd", "linkd.*", "providers", "providers.*"]),
    package_data={"linkd": ["py.typed", "templates/*.html", "static/*"]},
    install_requires=[
        "tornado>=6.3",
        "pluggy>=1.3",
        "cryptography>=41",
        "python-dotenv>=1.0",
    ],
    extras_require={
        "postgresql": ["psycopg[binary]>=3.1", "psycopg_pool>=3.2"],
        "test": [
            "pytest>=8",
            "wheel",
            "hypothesis>=6.100",
            "playwright>=1.40",
            "psycopg[binary]>=3.1",
            "psycopg_pool>=3.2",
        ],
        "bench": ["aiohttp>=3.9"],
    },
    entry_points={
        "console_scripts": ["linkd = linkd.cli:main"],
        "linkd": [
            "shopify = providers.shopify",
            "facebook = providers.facebook",
            "oauth2 = providers.oauth2",
        ],
    },
)
