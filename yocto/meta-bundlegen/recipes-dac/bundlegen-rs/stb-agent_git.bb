# nooelint: oelint.var.bbclassextend - a daemon for the box, no native or nativesdk use
SUMMARY = "On-box agent: installs app bundles and launches them through Dobby"
DESCRIPTION = "stb-agent is a systemd service on the system bus \
               (org.rdk.dac.BundleAgent). It installs OCI bundles atomically with sha256 \
               and signature checks and resumable downloads, launches them through Dobby, \
               uploads the box's platform-probe report to the bundle generator service, \
               and in developer mode accepts bundles pushed from a developer's machine."

require bundlegen-rs.inc

inherit systemd useradd

CARGO_BUILD_FLAGS:append = " -p stb-agent"

SYSTEMD_SERVICE:${PN} = "stb-agent.service"

# "packages": the box runs RALF packages. The agent then mounts their content
# for Dobby in the host's mount namespace, which needs the drop-in that turns
# off the unit's mount-namespace sandboxing, veritysetup for dm-verity, and
# the kernel's EROFS, overlay and loop support.
PACKAGECONFIG ??= ""
PACKAGECONFIG[packages] = ",,,cryptsetup"

# Members of group dac may call the agent's changing methods (the D-Bus policy).
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system dac"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/stb-agent/systemd/stb-agent.service ${D}${systemd_system_unitdir}/
    if ${@bb.utils.contains('PACKAGECONFIG', 'packages', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}/stb-agent.service.d
        install -m 0644 ${S}/stb-agent/systemd/stb-agent-packages.conf \
            ${D}${systemd_system_unitdir}/stb-agent.service.d/packages.conf
    fi
    install -d ${D}${datadir}/dbus-1/system.d
    install -m 0644 ${S}/stb-agent/dbus/org.rdk.dac.BundleAgent.conf ${D}${datadir}/dbus-1/system.d/
    install -d ${D}${sysconfdir}/stb-agent
    install -m 0644 ${S}/stb-agent/agent.toml ${D}${sysconfdir}/stb-agent/
    install -d ${D}${docdir}/stb-agent
    install -m 0644 ${S}/docs/stb-agent.md ${D}${docdir}/stb-agent/
}

FILES:${PN} += "${datadir}/dbus-1/system.d/org.rdk.dac.BundleAgent.conf"
CONFFILES:${PN} = "${sysconfdir}/stb-agent/agent.toml"

RDEPENDS:${PN} = "dbus"
RRECOMMENDS:${PN} = "dobby"
