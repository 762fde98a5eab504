"""The labels tf1kernel puts on what it creates on an engine, so that it finds (and removes) only its own."""

LABEL_MANAGED = "org.tf1kernel.managed"
LABEL_KERNEL_ID = "org.tf1kernel.kernel-id"
LABEL_OWNER = "org.tf1kernel.owner"
# Who may adopt a kernel whose server died, and what it was: the owner's uid, its kernelspec, the notebook (the
# server's JPY_SESSION_NAME) and its folder, and how long it waits idle for adoption (0: it does not detach).
LABEL_OWNER_UID = "org.tf1kernel.owner-uid"
LABEL_KERNELSPEC = "org.tf1kernel.kernelspec"
LABEL_NOTEBOOK = "org.tf1kernel.notebook"
LABEL_WORKING_DIR = "org.tf1kernel.working-dir"
LABEL_DETACHED_IDLE = "org.tf1kernel.detached-idle-seconds"
# The ports a kernel on its node's host network binds there (a swarm's): its connection file on this machine names
# the tunnel's end, which may differ.
LABEL_NODE_PORTS = "org.tf1kernel.node-ports"
# Set by Docker Swarm on a service's task containers: the service, not the container, is what tf1kernel manages.
LABEL_SWARM_SERVICE = "com.docker.swarm.service.id"
