from setuptools import setup

setup(cffi_modules=["netring_chan/_build/ffi_build.py:ffibuilder"])
