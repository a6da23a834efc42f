# Probes the image's rootfs at build time with platform-probe, replacing the
# readelf-based library list class: writes the platform's library list
# (BundleGen's NAME_libs.json) and the probe's full report (NAME_probe.json,
# which the generator prefers) next to the image.
#
#   inherit platform_probe_libs
#   PLATFORM_PROBE_NAME = "rpi3_reference_vc4_dunfell"

PLATFORM_PROBE_NAME ??= "${MACHINE}"

do_rootfs[depends] += "platform-probe-native:do_populate_sysroot"

platform_probe_libs() {
    install -d ${DEPLOY_DIR_IMAGE}
    platform-probe --root ${IMAGE_ROOTFS} --format bundlegen-libs \
        -o ${DEPLOY_DIR_IMAGE}/${PLATFORM_PROBE_NAME}_libs.json
    platform-probe --root ${IMAGE_ROOTFS} --format full \
        -o ${DEPLOY_DIR_IMAGE}/${PLATFORM_PROBE_NAME}_probe.json
}

platform_probe_libs[doc] = "Writes the image's library list and probe report with platform-probe"
ROOTFS_POSTPROCESS_COMMAND += "platform_probe_libs"
