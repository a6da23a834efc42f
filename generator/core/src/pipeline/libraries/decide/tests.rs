use std::collections::{BTreeMap, BTreeSet};

use bundlegen_protocol::config::libs::LibEntry;
use platform_probe::elf::{Abi, ElfInfo, ElfKind, FloatAbi};

use super::*;
use crate::pipeline::libraries::inventory::{ImageObject, Need};

const ARM: Abi = Abi {
    is_64: false,
    little_endian: true,
    machine: 40,
    float: FloatAbi::Hard,
};

/// Symlinks of the fake rootfs; every path of an object exists as itself.
struct FakeRoot {
    links: BTreeMap<String, String>,
    files: BTreeSet<String>,
}

impl RootfsView for FakeRoot {
    fn real_path(&mut self, path: &str) -> Option<String> {
        let real = self.links.get(path).cloned().unwrap_or_else(|| path.to_string());
        self.files.contains(&real).then_some(real)
    }
}

/// A small image: objects and the symlinks to them.
#[derive(Default)]
struct Image {
    objects: BTreeMap<String, ImageObject>,
    links: BTreeMap<String, String>,
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Image {
    /// A library at `real`, reached through the soname link `link`.
    fn library(mut self, link: &str, real: &str, defines: &[&str]) -> Self {
        self.links.insert(link.into(), real.into());
        let soname = link.rsplit('/').next().unwrap().to_string();
        self.objects
            .insert(real.into(), object(ElfKind::SharedObject, Some(soname), defines));
        self
    }

    /// `user` needs `name` (found at `link` if the image has it) with `versions`.
    fn needs(mut self, user: &str, name: &str, versions: &[&str]) -> Self {
        let found = self
            .links
            .iter()
            .find(|(link, _)| link.ends_with(&format!("/{name}")))
            .map(|(link, real)| (link.clone(), real.clone()));
        let object = self
            .objects
            .entry(user.into())
            .or_insert_with(|| object(ElfKind::Executable, None, &[]));
        object.needs.push(Need {
            name: name.into(),
            found,
        });
        if !versions.is_empty() {
            object.info.version_needs.insert(name.into(), set(versions));
        }
        self
    }

    fn plan(&self, boxed: &[LibEntry], request: &MatchRequest) -> Plan {
        let inventory = Inventory {
            objects: self.objects.clone(),
            ..Inventory::default()
        };
        let mut root = FakeRoot {
            links: self.links.clone(),
            files: self.objects.keys().cloned().collect(),
        };
        plan(&inventory, &BoxLibraries::new(boxed), &mut root, request)
    }
}

fn object(kind: ElfKind, soname: Option<String>, defines: &[&str]) -> ImageObject {
    ImageObject {
        info: ElfInfo {
            abi: ARM,
            kind,
            interpreter: None,
            soname,
            needed: vec![],
            filters: vec![],
            rpath: vec![],
            runpath: vec![],
            version_definitions: defines.iter().map(|s| s.to_string()).collect(),
            version_needs: BTreeMap::new(),
            versions_known: true,
        },
        needs: vec![],
    }
}

fn lib(name: &str, versions: &[&str], deps: &[&str]) -> LibEntry {
    LibEntry {
        name: name.into(),
        apiversions: versions.iter().map(|s| s.to_string()).collect(),
        deps: deps.iter().map(|s| s.to_string()).collect(),
    }
}

fn request() -> MatchRequest {
    MatchRequest {
        mode: MatchMode::Normal,
        walk: true,
        forced: vec![],
        host_or_image: vec![],
        match_image: true,
        pins: vec![],
        box_abi: Some(Abi {
            float: FloatAbi::Unspecified,
            ..ARM
        }),
        entrypoint: Some("/usr/bin/app".into()),
        host_programs: vec![],
    }
}

fn mounts(plan: &Plan) -> Vec<(&str, &str)> {
    plan.mounts
        .iter()
        .map(|m| (m.source.as_str(), m.destination.as_str()))
        .collect()
}

const LIBZ: &str = "/usr/lib/libz.so.1";
const LIBZ_REAL: &str = "/usr/lib/libz.so.1.2.11";

fn zlib_app(needs: &[&str]) -> Image {
    Image::default()
        .library(LIBZ, LIBZ_REAL, &["ZLIB_1.2.9"])
        .needs("/usr/bin/app", "libz.so.1", needs)
}

#[test]
fn an_image_library_the_box_serves_is_replaced_by_a_mount_at_its_real_path() {
    let plan = zlib_app(&["ZLIB_1.2.9"]).plan(&[lib(LIBZ, &["ZLIB_1.2.9", "ZLIB_1.2.12"], &[])], &request());
    assert_eq!(plan.remove, [LIBZ_REAL], "only the file; the soname link stays");
    assert_eq!(mounts(&plan), [(LIBZ, LIBZ_REAL)]);
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert!(
        plan.notes.iter().any(|n| n.starts_with("libz.so.1: from the box")),
        "{:?}",
        plan.notes
    );
}

#[test]
fn a_box_library_missing_a_needed_version_is_not_used() {
    let plan = zlib_app(&["ZLIB_1.2.9", "ZLIB_1.3"]).plan(&[lib(LIBZ, &["ZLIB_1.2.9"], &[])], &request());
    assert!(plan.mounts.is_empty() && plan.remove.is_empty());
    assert!(
        plan.notes.iter().any(|n| n.contains("lacks") && n.contains("ZLIB_1.3")),
        "{:?}",
        plan.notes
    );
}

#[test]
fn pins_need_the_exact_version_on_the_box() {
    let boxed = [lib(LIBZ, &["ZLIB_1.2.9"], &[])];
    let pinned = MatchRequest {
        pins: vec!["libz.so.1.2.11".into()],
        ..request()
    };
    let plan = zlib_app(&[]).plan(&boxed, &pinned);
    assert!(plan.mounts.is_empty(), "the box has no libz.so.1.2.11");
    assert!(
        plan.notes.iter().any(|n| n.contains("pinned to libz.so.1.2.11")),
        "{:?}",
        plan.notes
    );
    let with_version = [
        lib(LIBZ, &["ZLIB_1.2.9"], &[]),
        lib("/usr/lib/libz.so.1.2.11", &["ZLIB_1.2.9"], &[]),
    ];
    assert_eq!(mounts(&zlib_app(&[]).plan(&with_version, &pinned)), [(LIBZ, LIBZ_REAL)]);
}

#[test]
fn box_libraries_bring_their_dependencies_or_are_not_used() {
    // The box's libbar needs libfoo FOO_2; the image's libfoo only has FOO_1,
    // and an image program needs FOO_1, which the box's libfoo lacks.
    let image = Image::default()
        .library("/usr/lib/libfoo.so.1", "/usr/lib/libfoo.so.1.0", &["FOO_1"])
        .library("/usr/lib/libbar.so.1", "/usr/lib/libbar.so.1.0", &["BAR_1"])
        .needs("/usr/bin/app", "libbar.so.1", &["BAR_1"])
        .needs("/usr/bin/app", "libfoo.so.1", &["FOO_1"]);
    let boxed = [
        lib("/usr/lib/libbar.so.1", &["BAR_1"], &["/usr/lib/libfoo.so.1"]),
        lib("/usr/lib/libfoo.so.1", &["FOO_2"], &[]),
    ];
    let plan = image.plan(&boxed, &request());
    assert!(plan.mounts.is_empty(), "{:?}", plan.mounts);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("libbar.so.1: the image's copy: its dependency libfoo.so.1")),
        "{:?}",
        plan.notes
    );

    // A dependency the image lacks comes from the box too.
    let image = Image::default()
        .library("/usr/lib/libbar.so.1", "/usr/lib/libbar.so.1.0", &["BAR_1"])
        .needs("/usr/bin/app", "libbar.so.1", &["BAR_1"]);
    let boxed = [
        lib("/usr/lib/libbar.so.1", &["BAR_1"], &["/usr/lib/libdrm.so.2"]),
        lib("/usr/lib/libdrm.so.2", &[], &[]),
    ];
    let plan = image.plan(&boxed, &request());
    let mut found = mounts(&plan);
    found.sort();
    assert_eq!(
        found,
        [
            ("/usr/lib/libbar.so.1", "/usr/lib/libbar.so.1.0"),
            ("/usr/lib/libdrm.so.2", "/usr/lib/libdrm.so.2")
        ]
    );
}

#[test]
fn a_library_nobody_has_is_one_line_and_an_unknown_box_is_said_so() {
    let image = Image::default()
        .needs("/usr/bin/app", "libmissing.so.1", &[])
        .needs("/usr/bin/a", "libother.so.2", &[])
        .needs("/usr/bin/b", "libother.so.2", &[])
        .needs("/usr/bin/c", "libother.so.2", &[]);
    let plan = image.plan(&[lib("/usr/lib/libunrelated.so", &[], &[])], &request());
    assert_eq!(
        plan.unresolved,
        ["/usr/bin/a and 2 more need libother.so.2, which neither the image nor the box provides"]
    );
    // No library list: the box is not known to lack anything.
    let plan = image.plan(&[], &request());
    assert_eq!(
        plan.problems,
        [
            "/usr/bin/app needs libmissing.so.1, which the image lacks (the box's libraries are unknown: the \
          platform has no probe report or library list)"
        ]
    );
}

#[test]
fn what_neither_side_has_makes_the_app_incompatible() {
    let image =
        Image::default()
            .needs("/usr/bin/app", "libmissing.so.1", &[])
            .needs("/usr/bin/tool", "libother.so.2", &[]);
    let plan = image.plan(&[lib("/usr/lib/libunrelated.so", &[], &[])], &request());
    assert_eq!(
        plan.problems,
        ["/usr/bin/app needs libmissing.so.1, which neither the image nor the box provides"]
    );
    assert_eq!(
        plan.unresolved,
        ["/usr/bin/tool needs libother.so.2, which neither the image nor the box provides"]
    );
    let plan = Image::default()
        .needs("/usr/bin/app", "libegl.so.1", &[])
        .plan(&[lib("/usr/lib/libegl.so.1", &[], &[])], &request());
    assert_eq!(
        mounts(&plan),
        [("/usr/lib/libegl.so.1", "/usr/lib/libegl.so.1")],
        "the image lacks it: mounted where the box has it"
    );
    assert!(plan.problems.is_empty());
}

fn glibc_box() -> Vec<LibEntry> {
    vec![
        lib(
            "/lib/libc.so.6",
            &["GLIBC_2.4", "GLIBC_2.31", "GLIBC_PRIVATE"],
            &["/lib/ld-linux-armhf.so.3"],
        ),
        lib("/lib/libm.so.6", &["GLIBC_2.4", "GLIBC_2.29"], &["/lib/libc.so.6"]),
        lib("/lib/ld-linux-armhf.so.3", &["GLIBC_2.4", "GLIBC_PRIVATE"], &[]),
    ]
}

fn glibc_image(libc_defines: &[&str], libc_needs: &[&str]) -> Image {
    Image::default()
        .library("/lib/libc.so.6", "/lib/libc-2.31.so", libc_defines)
        .library("/lib/libm.so.6", "/lib/libm-2.31.so", &["GLIBC_2.4"])
        .needs("/usr/bin/app", "libc.so.6", libc_needs)
        .needs("/usr/bin/app", "libm.so.6", &["GLIBC_2.4"])
}

#[test]
fn glibc_moves_as_a_family() {
    let newer = ["GLIBC_2.4", "GLIBC_2.31", "GLIBC_2.34"];
    let plan = glibc_image(&newer, &["GLIBC_2.4"]).plan(&glibc_box(), &request());
    let mut destinations: Vec<&str> = plan.mounts.iter().map(|m| m.destination.as_str()).collect();
    destinations.sort();
    // The box's libc brings the box's loader, which the image lacks here.
    assert_eq!(
        destinations,
        ["/lib/ld-linux-armhf.so.3", "/lib/libc-2.31.so", "/lib/libm-2.31.so"]
    );
    // One member the box cannot serve keeps the whole family in the image.
    let plan = glibc_image(&newer, &["GLIBC_2.4", "GLIBC_2.34"]).plan(&glibc_box(), &request());
    assert!(plan.mounts.is_empty(), "{:?}", plan.mounts);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("glibc family") && n.contains("the image's copies")),
        "{:?}",
        plan.notes
    );
}

/// libc loads its name service modules itself (nsswitch.conf): nothing
/// links to them, and they use its private symbols, so the image's copies
/// must not stay beside another build's libc.
#[test]
fn glibc_modules_nobody_links_to_move_with_libc() {
    let image = glibc_image(&["GLIBC_2.4", "GLIBC_2.31"], &["GLIBC_2.4"])
        .library("/lib/libnss_files.so.2", "/lib/libnss_files-2.31.so", &[])
        .library("/lib/libnss_dns.so.2", "/lib/libnss_dns-2.31.so", &[])
        .library("/lib/libnss_myhostname.so.2", "/lib/libnss_myhostname.so.2", &[]);
    let mut newer_box: Vec<LibEntry> = glibc_box()
        .into_iter()
        .map(|mut entry| {
            entry.apiversions.push("GLIBC_2.35".into());
            entry
        })
        .collect();
    newer_box.push(lib("/lib/libnss_files.so.2", &[], &["/lib/libc.so.6"]));
    newer_box.push(lib("/lib/libnss_dns.so.2", &[], &["/lib/libc.so.6"]));
    let plan = image.plan(&newer_box, &request());
    let mut destinations: Vec<&str> = plan.mounts.iter().map(|m| m.destination.as_str()).collect();
    destinations.sort();
    assert_eq!(
        destinations,
        [
            "/lib/ld-linux-armhf.so.3",
            "/lib/libc-2.31.so",
            "/lib/libm-2.31.so",
            "/lib/libnss_dns-2.31.so",
            "/lib/libnss_files-2.31.so"
        ],
        "{:?}",
        plan.notes
    );
    assert!(plan.remove.contains(&"/lib/libnss_files-2.31.so".to_string()));
    assert!(
        !plan.remove.iter().any(|p| p.contains("myhostname")),
        "systemd's module is not glibc's"
    );

    // A box without one of the image's modules keeps the whole family in the image.
    newer_box.retain(|entry| entry.name != "/lib/libnss_dns.so.2");
    let plan = image.plan(&newer_box, &request());
    let mounted: Vec<&str> = plan.mounts.iter().map(|m| m.destination.as_str()).collect();
    assert_eq!(mounted, ["/lib/ld-linux-armhf.so.3"], "only the loader the image lacks");
    assert!(plan.remove.is_empty(), "{:?}", plan.remove);
}

#[test]
fn programs_start_with_the_box_loader_when_the_box_libc_serves_them() {
    let image = |app_needs: &[&str]| {
        let mut image = glibc_image(&["GLIBC_2.4", "GLIBC_2.31"], app_needs)
            .library(
                "/lib/ld-linux-armhf.so.3",
                "/lib/ld-2.31.so",
                &["GLIBC_2.4", "GLIBC_PRIVATE"],
            )
            .needs("/lib/libc-2.31.so", "ld-linux-armhf.so.3", &["GLIBC_PRIVATE"]);
        // The app starts with a copy of the loader of its own, as `cp -L` makes.
        let loader = object(
            ElfKind::SharedObject,
            Some("ld-linux-armhf.so.3".into()),
            &["GLIBC_2.4", "GLIBC_PRIVATE"],
        );
        image.objects.insert("/lib64/ld-linux-armhf.so.3".into(), loader);
        let app = image.objects.get_mut("/usr/bin/app").unwrap();
        app.info.interpreter = Some("/lib64/ld-linux-armhf.so.3".into());
        image
    };
    let plan = image(&["GLIBC_2.4"]).plan(&glibc_box(), &request());
    let mounts = mounts(&plan);
    assert!(
        mounts.contains(&("/lib/ld-linux-armhf.so.3", "/lib/ld-2.31.so")),
        "{mounts:?}"
    );
    assert!(
        mounts.contains(&("/lib/ld-linux-armhf.so.3", "/lib64/ld-linux-armhf.so.3")),
        "{mounts:?}"
    );
    assert!(plan.remove.contains(&"/lib64/ld-linux-armhf.so.3".to_string()));
    // With the image's own glibc, its loader stays too.
    let plan = image(&["GLIBC_2.4", "GLIBC_2.34"]).plan(&glibc_box(), &request());
    assert!(plan.mounts.is_empty() && plan.remove.is_empty(), "{plan:?}");
}

#[test]
fn a_loader_the_image_lacks_comes_from_the_box_or_makes_the_app_incompatible() {
    let image = |interpreter: &str| {
        let mut image = zlib_app(&["ZLIB_1.2.9"]);
        let app = image.objects.get_mut("/usr/bin/app").unwrap();
        app.info.interpreter = Some(interpreter.into());
        image
    };
    let plan = image("/lib/ld-linux-armhf.so.3").plan(&glibc_box(), &request());
    assert!(
        mounts(&plan).contains(&("/lib/ld-linux-armhf.so.3", "/lib/ld-linux-armhf.so.3")),
        "{plan:?}"
    );
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    let plan = image("/lib/ld-musl-armhf.so.1").plan(&glibc_box(), &request());
    assert_eq!(
        plan.problems,
        ["/usr/bin/app starts with the loader /lib/ld-musl-armhf.so.1, which neither the image nor the box provides"]
    );
}

#[test]
fn bundlegen_walk_takes_graphics_libraries_and_their_dependencies() {
    let image = glibc_image(&["GLIBC_2.4", "GLIBC_2.31"], &["GLIBC_2.4"]);
    let mut boxed = glibc_box();
    boxed.push(lib(
        "/usr/lib/libEGL.so.1",
        &[],
        &["/lib/libc.so.6", "/usr/lib/libdrm.so.2"],
    ));
    boxed.push(lib("/usr/lib/libdrm.so.2", &[], &["/lib/libc.so.6"]));
    let forced = MatchRequest {
        forced: vec![("/usr/lib/libEGL.so.1".into(), "/usr/lib/libEGL.so".into())],
        ..request()
    };
    let plan = image.plan(&boxed, &forced);
    let found = mounts(&plan);
    for expected in [
        ("/usr/lib/libEGL.so.1", "/usr/lib/libEGL.so"),
        ("/lib/libc.so.6", "/lib/libc.so.6"),
        ("/lib/libm.so.6", "/lib/libm.so.6"),
        ("/lib/ld-linux-armhf.so.3", "/lib/ld-linux-armhf.so.3"),
        ("/usr/lib/libdrm.so.2", "/usr/lib/libdrm.so.2"),
    ] {
        assert!(found.contains(&expected), "{expected:?} in {found:?}");
    }
    // BundleGen's removal: the path and the file it leads to.
    assert!(
        plan.remove.contains(&"/lib/libc.so.6".to_string()) && plan.remove.contains(&"/lib/libc-2.31.so".to_string())
    );

    // The box's libc wins the walk only if its versions include the image's:
    // here the image's libc has GLIBC_2.34 the box lacks, so it stays...
    let newer_image = glibc_image(&["GLIBC_2.4", "GLIBC_2.31", "GLIBC_2.34"], &["GLIBC_2.4"]);
    let mut boxed_old = vec![lib("/lib/libc.so.6", &["GLIBC_2.4", "GLIBC_2.31"], &[])];
    boxed_old.push(lib("/usr/lib/libEGL.so.1", &[], &["/lib/libc.so.6"]));
    let plan = newer_image.plan(&boxed_old, &forced);
    assert!(!mounts(&plan).contains(&("/lib/libc.so.6", "/lib/libc.so.6")));
}

#[test]
fn forced_box_libraries_that_break_the_app_make_it_incompatible() {
    // The walk takes the box's libc (its versions include the image's), but
    // the app itself needs a version neither has... the box's libc lacks it.
    let image = Image::default()
        .library("/lib/libc.so.6", "/lib/libc-2.31.so", &["GLIBC_2.4"])
        .needs("/usr/bin/app", "libc.so.6", &["GLIBC_2.35"]);
    let boxed = vec![
        lib("/lib/libc.so.6", &["GLIBC_2.4", "GLIBC_2.31"], &[]),
        lib("/usr/lib/libEGL.so.1", &[], &["/lib/libc.so.6"]),
    ];
    let forced = MatchRequest {
        forced: vec![("/usr/lib/libEGL.so.1".into(), "/usr/lib/libEGL.so.1".into())],
        ..request()
    };
    let plan = image.plan(&boxed, &forced);
    assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
    assert!(
        plan.problems[0].contains("GLIBC_2.35") && plan.problems[0].contains("/lib/libc.so.6"),
        "{:?}",
        plan.problems
    );
}

#[test]
fn modes_and_switches() {
    let boxed = [lib(LIBZ, &["ZLIB_1.2.9"], &[])];
    // image mode: no matching of the image's closure.
    let image_mode = MatchRequest {
        mode: MatchMode::Image,
        ..request()
    };
    assert!(zlib_app(&["ZLIB_1.2.9"]).plan(&boxed, &image_mode).mounts.is_empty());
    // host mode: the box's copy even if it lacks versions.
    let host_mode = MatchRequest {
        mode: MatchMode::Host,
        ..request()
    };
    assert_eq!(
        mounts(&zlib_app(&["ZLIB_9"]).plan(&boxed, &host_mode)),
        [(LIBZ, LIBZ_REAL)]
    );
    // --nodepwalking: forced libraries only.
    let forced_only = MatchRequest {
        walk: false,
        forced: vec![("/usr/lib/libEGL.so.1".into(), "/usr/lib/libEGL.so.1".into())],
        ..request()
    };
    let boxed = [
        lib("/usr/lib/libEGL.so.1", &[], &["/usr/lib/libdrm.so.2"]),
        lib("/usr/lib/libdrm.so.2", &[], &[]),
        lib(LIBZ, &["ZLIB_1.2.9"], &[]),
    ];
    assert_eq!(
        mounts(&zlib_app(&["ZLIB_1.2.9"]).plan(&boxed, &forced_only)),
        [("/usr/lib/libEGL.so.1", "/usr/lib/libEGL.so.1")]
    );
}

#[test]
fn unknown_needs_or_another_abi_keep_the_image_copy() {
    let boxed = [lib(LIBZ, &["ZLIB_1.2.9"], &[])];
    let mut stripped = zlib_app(&[]);
    stripped.objects.get_mut("/usr/bin/app").unwrap().info.versions_known = false;
    assert!(stripped.plan(&boxed, &request()).mounts.is_empty());
    let x86 = MatchRequest {
        box_abi: Some(Abi {
            machine: 62,
            is_64: true,
            ..ARM
        }),
        ..request()
    };
    assert!(zlib_app(&[]).plan(&boxed, &x86).mounts.is_empty());
}

#[test]
fn unused_libraries_are_found_from_the_executables() {
    let mut image = zlib_app(&[]).library("/usr/lib/libunused.so.1", "/usr/lib/libunused.so.1.0", &[]);
    image = image.library("/usr/lib/libplugin.so", "/usr/lib/libplugin.so", &[]);
    image = image.library("/usr/lib/libnamed.so.2", "/usr/lib/libnamed.so.2.0", &[]);
    let inventory = Inventory {
        objects: image.objects,
        ..Inventory::default()
    };
    // The program names libnamed (a dlopen string); libunused names itself only.
    let names = BTreeMap::from([
        ("/usr/bin/app".to_string(), set(&["libnamed.so.2"])),
        ("/usr/lib/libunused.so.1.0".to_string(), set(&["libunused.so.1"])),
    ]);
    let unused = unused_libraries(&inventory, &["libplugin.so".to_string()], &names);
    assert_eq!(unused, ["/usr/lib/libunused.so.1.0"]);
}

/// Dobby's init as the probe describes it: libstdc++ (GLIBCXX_3.4.21) and libc.
fn dobby_init(versions_known: bool) -> HostProgramNeeds {
    HostProgramNeeds {
        path: "/usr/libexec/DobbyInit".into(),
        interpreter: Some("/lib/ld-linux-armhf.so.3".into()),
        deps: vec![
            ("libstdc++.so.6".into(), Some("/usr/lib/libstdc++.so.6".into())),
            ("libc.so.6".into(), Some("/lib/libc.so.6".into())),
        ],
        version_needs: versions_known.then(|| {
            BTreeMap::from([
                ("libstdc++.so.6".to_string(), set(&["GLIBCXX_3.4.21"])),
                ("libc.so.6".to_string(), set(&["GLIBC_2.4"])),
            ])
        }),
    }
}

fn box_with_libstdcxx() -> Vec<LibEntry> {
    vec![
        lib(
            "/lib/libc.so.6",
            &["GLIBC_2.4", "GLIBC_2.34"],
            &["/lib/ld-linux-armhf.so.3"],
        ),
        lib("/lib/ld-linux-armhf.so.3", &["GLIBC_2.4"], &[]),
        lib(
            "/usr/lib/libstdc++.so.6",
            &["GLIBCXX_3.4", "GLIBCXX_3.4.21"],
            &["/lib/libgcc_s.so.1", "/lib/libc.so.6"],
        ),
        lib("/lib/libgcc_s.so.1", &["GCC_3.5"], &["/lib/libc.so.6"]),
    ]
}

/// An image with its own glibc (newer than the box's) and an app.
fn image_with_libc() -> Image {
    Image::default()
        .library(
            "/lib/libc.so.6",
            "/lib/libc-2.36.so",
            &["GLIBC_2.4", "GLIBC_2.34", "GLIBC_2.36"],
        )
        .library("/lib/ld-linux-armhf.so.3", "/lib/ld-2.36.so", &["GLIBC_2.4"])
        .needs("/usr/bin/app", "libc.so.6", &["GLIBC_2.36"])
}

#[test]
fn dobby_init_gets_what_the_image_lacks_from_the_box_and_the_rest_from_the_image() {
    let mut image_mode = request();
    image_mode.mode = MatchMode::Image;
    for request in [request(), image_mode] {
        let mut request = request;
        request.host_programs = vec![dobby_init(true)];
        let plan = image_with_libc().plan(&box_with_libstdcxx(), &request);
        assert_eq!(
            mounts(&plan),
            [
                ("/usr/lib/libstdc++.so.6", "/usr/lib/libstdc++.so.6"),
                ("/lib/libgcc_s.so.1", "/lib/libgcc_s.so.1")
            ],
            "{:?}: {:#?}",
            request.mode,
            plan.notes
        );
        assert!(plan.remove.is_empty(), "{:?}", plan.remove);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert!(
            plan.notes
                .iter()
                .any(|n| n == "libc.so.6: the image's copy (/lib/libc-2.36.so) serves /usr/libexec/DobbyInit"),
            "{:#?}",
            plan.notes
        );
    }
}

#[test]
fn an_image_copy_older_than_dobby_init_needs_is_replaced_by_the_box_copy() {
    let image = image_with_libc()
        .library(
            "/usr/lib/libstdc++.so.6",
            "/usr/lib/libstdc++.so.6.0.19",
            &["GLIBCXX_3.4"],
        )
        .needs("/usr/bin/app", "libstdc++.so.6", &["GLIBCXX_3.4"]);
    let mut request = request();
    request.mode = MatchMode::Image;
    request.host_programs = vec![dobby_init(true)];
    let plan = image.plan(&box_with_libstdcxx(), &request);
    assert_eq!(
        mounts(&plan)[0],
        ("/usr/lib/libstdc++.so.6", "/usr/lib/libstdc++.so.6.0.19"),
        "{:#?}",
        plan.notes
    );
    assert_eq!(plan.remove, ["/usr/lib/libstdc++.so.6.0.19"]);
    assert!(
        plan.problems.is_empty(),
        "the app's GLIBCXX_3.4 is in the box's copy: {:?}",
        plan.problems
    );
}

#[test]
fn dobby_init_needs_nobody_provides_make_the_bundle_incompatible() {
    let cases: [(&str, Vec<LibEntry>, HostProgramNeeds); 3] = [
        // The box's list lacks libstdc++ and the image has none.
        (
            "has no compatible copy",
            box_with_libstdcxx()[..2].to_vec(),
            dobby_init(true),
        ),
        // The box's libstdc++ lacks a version the init needs.
        (
            "lacks",
            vec![lib("/usr/lib/libstdc++.so.6", &["GLIBCXX_3.4"], &[])],
            dobby_init(true),
        ),
        // The loader is in neither.
        (
            "loader",
            box_with_libstdcxx()
                .into_iter()
                .filter(|l| !l.name.contains("ld-linux"))
                .collect(),
            HostProgramNeeds {
                interpreter: Some("/lib/ld-linux-armhf.so.3".into()),
                ..dobby_init(true)
            },
        ),
    ];
    for (expected, boxed, program) in cases {
        let image = if expected == "loader" {
            Image::default().needs("/usr/bin/app", "libc.so.6", &[])
        } else {
            image_with_libc()
        };
        let mut request = request();
        request.mode = MatchMode::Image;
        request.host_programs = vec![program];
        let plan = image.plan(&boxed, &request);
        assert!(
            plan.problems
                .iter()
                .any(|p| p.starts_with("/usr/libexec/DobbyInit") && p.contains(expected)),
            "{expected}: {:?}",
            plan.problems
        );
    }
}

#[test]
fn without_version_needs_the_image_copy_must_define_all_the_box_copy_does() {
    // BundleGen's list only: the image's libc serves the init only if it
    // defines every version the box's does.
    let mut request = request();
    request.mode = MatchMode::Image;
    request.host_programs = vec![dobby_init(false)];
    let older = Image::default()
        .library("/lib/libc.so.6", "/lib/libc-2.30.so", &["GLIBC_2.4"])
        .needs("/usr/bin/app", "libc.so.6", &["GLIBC_2.4"]);
    let plan = older.plan(&box_with_libstdcxx(), &request);
    let mounted: Vec<(&str, &str)> = mounts(&plan);
    assert!(
        mounted.contains(&("/lib/libc.so.6", "/lib/libc-2.30.so")),
        "{mounted:?}"
    );
    assert!(
        mounted.contains(&("/lib/ld-linux-armhf.so.3", "/lib/ld-linux-armhf.so.3")),
        "the loader follows libc: {mounted:?}"
    );
    let newer = image_with_libc().plan(&box_with_libstdcxx(), &request);
    assert!(
        !mounts(&newer).iter().any(|(source, _)| *source == "/lib/libc.so.6"),
        "{:?}",
        mounts(&newer)
    );
}
