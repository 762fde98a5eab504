"""The labels tf1kernel puts on what it creates on an engine, so that it finds (and removes) only its own."""

LABEL_MANAGED = "org.tf1kernel.managed"
LABEL_KERNEL_ID = "org.tf1kernel.kernel-id"
LABEL_OWNER = "org.tf1kernel.owner"
