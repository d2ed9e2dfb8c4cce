//! This machine's host name, as the kernel has it: what TLS certificates are issued for, what
//! mDNS names are made from, and what `/info.json` reports.

/// The host name from gethostname(2), not /proc/sys/kernel/hostname: the systemd unit's
/// ProcSubset=pid hides the latter. `None` when it cannot be read or is not UTF-8.
pub fn name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; the result is NUL-terminated or cut
    // at the buffer's end, and both are handled below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_is_the_kernels() {
        // uname(2)'s nodename is the same kernel value gethostname(2) reads.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: uname writes one utsname through a valid pointer.
        assert_eq!(unsafe { libc::uname(&mut uts) }, 0);
        let nodename: Vec<u8> = uts
            .nodename
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        assert_eq!(super::name().unwrap().into_bytes(), nodename);
    }
}
