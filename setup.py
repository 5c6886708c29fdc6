from setuptools import Extension, setup

setup(
    cffi_modules=["netring_chan/_build/ffi_build.py:ffibuilder"],
    # The per-packet async step (see the file's header): CPython's limited
    # API, so one build serves every interpreter, like the cffi module.
    ext_modules=[Extension("netring_chan._fastpath", ["netring_chan/_build/fastpath.c"],
                           depends=["netring_chan/_build/c/txring.h"],
                           py_limited_api=True, define_macros=[("Py_LIMITED_API", "0x030A0000")])],
)
