# tf1kernel: load the helpers baked into this image in every kernel.
c.InteractiveShellApp.extensions = ["tf1kernel_magics"]  # noqa: F821
