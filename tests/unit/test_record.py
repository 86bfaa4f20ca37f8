import subprocess
import sys

import pytest

from flexdriver.record import record

REPO = __file__.rsplit("/tests/", 1)[0]


@record
class Point:
    """A point."""

    x: int
    y: int = 0
    label: str = ""

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


def test_fields_defaults_methods_and_docstring_are_kept():
    p = Point(3, label="a")
    assert (p.x, p.y, p.label, p.norm1) == (3, 0, "a", 3)
    assert Point.__doc__ == "A point." and Point.__name__ == "Point" and Point.__module__ == __name__
    assert repr(p) == "Point(x=3, y=0, label='a')"


def test_records_are_values_that_cannot_be_changed():
    p = Point(1, 2)
    assert p == Point(x=1, y=2) and hash(p) == hash(Point(1, 2)) and p != Point(1, 3)
    assert p._replace(y=5) == Point(1, 5) and p.y == 2
    with pytest.raises(AttributeError):
        p.y = 9
    with pytest.raises(AttributeError):
        p.other = 1


def test_a_field_without_default_after_one_with_is_refused():
    with pytest.raises(TypeError, match="without a default"):

        @record
        class Bad:
            a: int = 0
            b: int


def test_the_call_path_imports_none_of_the_slow_modules():
    """What every mount and unmount imports: no typing, dataclasses (inspect, ast, dis), secrets
    (OpenSSL) or traceback. A new import of one of them costs every call."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import flexdriver.kubelet, flexdriver.core, flexdriver.driver; "
        "print(','.join(sorted(set(sys.argv[2].split(',')) & set(sys.modules))))"
    )
    # grpc and protobuf: the CSI front-end's, never the FlexVolume executable's.
    slow = "typing,dataclasses,inspect,ast,dis,secrets,hashlib,traceback,tempfile,shutil,random,grpc,google.protobuf"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe, REPO, slow], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.strip() == ""
