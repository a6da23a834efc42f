//! Loop devices over a range of a file, read-only and auto-clearing: the
//! EROFS content of a package is mounted where it lies inside the `.ralf`.
//!
//! `unsafe` is allowed here, and only here: the loop driver is driven by
//! ioctls (`LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE`) with a C struct, which no
//! safe wrapper offers. Each call passes a pointer to a value that lives
//! for the call.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CONTROL: &str = "/dev/loop-control";
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; LO_NAME_SIZE],
    crypt_name: [u8; LO_NAME_SIZE],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);

/// A configured loop device; it detaches itself once nothing holds it (its
/// mount, and this handle's file).
pub struct LoopDevice {
    pub path: PathBuf,
    _device: File,
}

/// Attaches `size` bytes at `offset` of `file` to a free loop device,
/// read-only, with a 4096-byte logical block size.
pub fn attach(file: &Path, offset: u64, size: u64) -> io::Result<LoopDevice> {
    let backing = File::open(file)?;
    let control = OpenOptions::new().read(true).write(true).open(LOOP_CONTROL)?;
    let mut name = [0u8; LO_NAME_SIZE];
    let text = file.as_os_str().as_encoded_bytes();
    let len = text.len().min(LO_NAME_SIZE - 1);
    name[..len].copy_from_slice(&text[..len]);
    // Another process may take the device between the two calls: try again.
    for _ in 0..16 {
        // SAFETY: the ioctl takes no argument.
        let index = unsafe { loop_ctl_get_free(control.as_raw_fd()) }.map_err(io::Error::from)?;
        let path = PathBuf::from(format!("/dev/loop{index}"));
        let device = match OpenOptions::new().read(true).open(&path) {
            Ok(device) => device,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 4096,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset,
                sizelimit: size,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                file_name: name,
                crypt_name: [0; LO_NAME_SIZE],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `config` is a valid loop_config that outlives the call.
        match unsafe { loop_configure(device.as_raw_fd(), &config) } {
            Ok(_) => return Ok(LoopDevice { path, _device: device }),
            Err(nix::errno::Errno::EBUSY) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free loop device could be configured"))
}
