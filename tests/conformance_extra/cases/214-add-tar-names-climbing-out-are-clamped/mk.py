"""Write esc.tar: one member climbing out with ../../../, one plain."""

import io
import tarfile

with tarfile.open("esc.tar", "w") as tf:
    for name, data in (("../../../escape.txt", b"esc\n"), ("ok.txt", b"ok\n")):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
