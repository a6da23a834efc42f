SUMMARY = "Inventories a box's shared libraries and device nodes"
DESCRIPTION = "platform-probe lists every shared library the loader can use \
               (names, ABI, symbol versions, dependencies, sha256) and every device node \
               with its driver, of a running box or of an image rootfs (--root), as the \
               bundle generator's platform library list, a full report, gpu.devs or CDI."

require bundlegen-rs.inc

CARGO_BUILD_FLAGS:append = " -p platform-probe"

# The native probe runs over image rootfs at build time (platform_probe_libs.bbclass).
BBCLASSEXTEND = "native"
