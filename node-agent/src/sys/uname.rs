//! The running kernel's release, from uname(2).

/// Kernel release and machine, e.g. `6.8.0-45-generic (x86_64)`; `unknown` if uname fails.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data (byte arrays): all zeroes is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname; uname writes only into it.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    format!("{} ({})", c_field(&u.release), c_field(&u.machine))
}

/// A NUL-terminated field of utsname as text (the whole array if it has no NUL).
fn c_field(f: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = f
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_a_release() {
        let r = super::kernel_release();
        assert!(r.contains(" (") && !r.starts_with("unknown"), "{r}");
    }
}
