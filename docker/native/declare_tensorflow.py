"""Tell pip which TensorFlow is installed, and keep it: run once at image build (Python 3.6+).

TensorFlow 1.x builds published under another name (tensorflow-ascend, tensorflow-cpu, a
community wheel) install the `tensorflow` package, but pip knows them only by their own name.
A later `pip install` of a package that requires `tensorflow` would then pull a second
TensorFlow over the first. This writes a dist-info that declares the installed build as
`tensorflow` at its version (it owns no files), and a pip constraints file, named by
PIP_CONSTRAINT in the image, that pins TensorFlow and the companions it breaks without.

Usage: python declare_tensorflow.py PREFIX   (the --prefix the packages were installed into)
"""

import email.parser
import os
import sys
import sysconfig

# Companions pinned with TensorFlow: other versions break TF 1.15 (numpy ABI, protobuf 4.x, h5py
# and Keras' HDF5 files) or pull a TensorFlow 2 over it (tensorboard, tensorflow-estimator).
PINNED = ("numpy", "protobuf", "h5py", "tensorboard", "tensorflow-estimator", "keras-applications",
          "keras-preprocessing")


def normalize(name):
    return name.lower().replace("_", "-").replace(".", "-")


def distributions(site):
    for entry in sorted(os.listdir(site)):
        if entry.endswith(".dist-info"):
            with open(os.path.join(site, entry, "METADATA"), encoding="utf-8") as stream:
                metadata = email.parser.Parser().parse(stream, headersonly=True)
            top_level = os.path.join(site, entry, "top_level.txt")
            packages = open(top_level).read().split() if os.path.exists(top_level) else []
            yield entry, metadata["Name"], metadata["Version"], packages


def main(prefix):
    site = sysconfig.get_path("purelib", vars={"base": prefix, "platbase": prefix})
    found = list(distributions(site))
    tensorflow = [d for d in found if "tensorflow" in d[3] and normalize(d[1]).startswith("tensorflow")
                  and not normalize(d[1]).startswith(("tensorflow-estimator", "tensorboard"))]
    if len(tensorflow) != 1:
        sys.exit("declare_tensorflow: expected one TensorFlow distribution in %s, found %r" % (site, tensorflow))
    _, name, version, _ = tensorflow[0]
    if normalize(name) != "tensorflow":
        alias = "tensorflow-%s.dist-info" % version
        os.makedirs(os.path.join(site, alias))
        files = {
            "METADATA": "Metadata-Version: 2.1\nName: tensorflow\nVersion: %s\nSummary: %s %s, installed under "
                        "its own name, is this TensorFlow (declared by tf1kernel; owns no files)\n"
                        % (version, name, version),
            "INSTALLER": "tf1kernel\n",
        }
        for filename, content in files.items():
            with open(os.path.join(site, alias, filename), "w") as stream:
                stream.write(content)
        with open(os.path.join(site, alias, "RECORD"), "w") as stream:
            stream.write("".join("%s/%s,,\n" % (alias, filename) for filename in [*files, "RECORD"]))
        print("declared %s %s to pip as tensorflow %s" % (name, version, version))
    pins = ["tensorflow==%s" % version]
    pins += ["%s==%s" % (normalize(n), v) for _, n, v, _ in found if normalize(n) in PINNED]
    folder = os.path.join(prefix, "share", "tf1kernel")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "pip-constraints.txt"), "w") as stream:
        stream.write("# Kept by tf1kernel: what this kernel's TensorFlow needs. Remove PIP_CONSTRAINT to override.\n")
        stream.write("\n".join(sorted(pins)) + "\n")
    print("pip constraints: " + ", ".join(sorted(pins)))


if __name__ == "__main__":
    main(sys.argv[1])
