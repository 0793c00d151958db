from setuptools import setup

setup(
    name="linkd-example",
    version="1.2.3",
    description="A third-party linkd provider plugin, used by linkd's tests",
    py_modules=["linkd_example"],
    install_requires=["linkd"],
    entry_points={"linkd": ["example = linkd_example"]},
)
