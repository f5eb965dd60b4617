"""Build of the optional C kernel (helpers._convkernel); everything else is in pyproject.toml.

The extension is optional: where no C compiler is found the package installs without it and
:mod:`helpers.inference` reports that the fast CPU inference path is unavailable.
"""
import sys

from setuptools import Extension, setup

args = [] if sys.platform == "win32" else ["-O3", "-std=gnu11", "-ffp-contract=fast", "-fno-math-errno", "-Wno-psabi"]
setup(ext_modules=[Extension("helpers._convkernel", ["src/helpers/_convkernel.c"],
                             depends=["src/helpers/_conv_body.h"], extra_compile_args=args,
                             optional=True)])
