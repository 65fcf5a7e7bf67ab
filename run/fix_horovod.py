"""The project's own source fixes to Horovod 0.28.1 (its last release, 2023), so that it builds
against today's TensorFlow (2.19 and later) and today's compilers (GCC 14, Debian 13).
run/install.sh applies them to the unpacked sdist before building; each is small, says why,
and keeps the source building against the older TensorFlow and GCC it was written for.

Usage: python run/fix_horovod.py SOURCE_DIR      (prints one line per fix applied)

Each fix names the exact text it replaces and must find it exactly once, so a different
Horovod release is refused instead of half-patched. TensorFlow's bundled highwayhash and
farmhash headers are not a source fix: install.sh puts their directories on the include path.
"""
import os
import re
import sys

HOROVOD = "0.28.1"

# (file, text it replaces, replacement, why)
FIXES = [
    ("horovod/tensorflow/xla_mpi_ops.cc",
     '#include "tensorflow/compiler/xla/client/xla_builder.h"\n',
     '#if __has_include("xla/hlo/builder/xla_builder.h")\n'
     '#include "xla/hlo/builder/xla_builder.h"\n'
     '#else\n'
     '#include "tensorflow/compiler/xla/client/xla_builder.h"\n'
     '#endif\n',
     "TensorFlow 2.19+ moved XLA's builder header to xla/hlo/builder/"),
    ("horovod/common/group_table.h",
     "#include <mutex>\n",
     "#include <mutex>\n#include <string>\n",
     "uses std::string; GCC 14's headers no longer bring <string> in through the others"),
    ("horovod/common/common.h",
     "#include <string>\n",
     "#include <stdexcept>\n#include <string>\n",
     "throws std::logic_error; GCC 14's headers no longer bring <stdexcept> in through <string>"),
    ("third_party/flatbuffers/include/flatbuffers/stl_emulation.h",
     "  FLATBUFFERS_CONSTEXPR_CPP14 span &operator=(const span &other)\n"
     "      FLATBUFFERS_NOEXCEPT {\n"
     "    data_ = other.data_;\n"
     "    count_ = other.count_;\n"
     "  }\n",
     "  span &operator=(const span &other) = delete;\n",
     "the bundled flatbuffers' span assigns its const members, which no compiler could ever "
     "instantiate; GCC 14 rejects the body itself, so it is deleted (as it always was in effect)"),
]


def version(src: str) -> str:
    text = open(os.path.join(src, "horovod", "__init__.py")).read()
    return re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text).group(1)


def apply(src: str) -> list[str]:
    """Apply every fix to the Horovod source tree at src; returns what was done."""
    found = version(src)
    if found != HOROVOD:
        raise SystemExit(f"fix_horovod: {src} is Horovod {found}; these fixes are for {HOROVOD}")
    done = []
    for path, old, new, why in FIXES:
        full = os.path.join(src, path)
        text = open(full).read()
        if new in text:          # applied before: rerunning is harmless
            continue
        if text.count(old) != 1:
            raise SystemExit(f"fix_horovod: {path}: expected the text to replace once, "
                             f"found it {text.count(old)} times")
        open(full, "w").write(text.replace(old, new))
        done.append(f"{path}: {why}")
    return done


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python run/fix_horovod.py SOURCE_DIR")
    for line in apply(sys.argv[1]):
        print(line)
