//! The kernel's view of the address space: `/proc/self/maps`.

use super::Access;

/// One line of `/proc/self/maps`: a kernel mapping (VMA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelMapping {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// Read, write, execute permissions.
    pub access: Access,
    /// Shared (`s`) rather than private (`p`).
    pub shared: bool,
    /// Offset into the file.
    pub offset: u64,
    /// Device of the file, as `major:minor` text.
    pub device: String,
    /// Inode of the file; 0 for anonymous memory.
    pub inode: u64,
    /// The path or pseudo-name (`[stack]`, `[heap]`, …); empty if none.
    pub path: String,
}

impl KernelMapping {
    /// Whether this is a mapping of a file (as opposed to anonymous memory
    /// or a kernel pseudo-mapping).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Parses the text of `/proc/<pid>/maps`; lines that do not parse are
/// skipped.
pub fn parse_maps(text: &str) -> Vec<KernelMapping> {
    text.lines().filter_map(parse_line).collect()
}

/// The sum, in kilobytes, of `field` (`Rss`, `AnonHugePages`, …) over the
/// mappings in `smaps` (the text of `/proc/<pid>/smaps`) that meet
/// `range`; `None` if one of those values does not parse.
#[cfg(any(test, feature = "cli"))]
pub fn smaps_kib(smaps: &str, field: &str, range: std::ops::Range<usize>) -> Option<u64> {
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        if let Some(value) = line.strip_prefix(field).and_then(|v| v.strip_prefix(':')) {
            if inside {
                kib += value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()?;
            }
        } else if let Some((span, _)) = line.split_once(' ')
            && let Some((start, end)) = span.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = start < range.end && end > range.start;
        }
    }
    Some(kib)
}

fn parse_line(line: &str) -> Option<KernelMapping> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?.as_bytes();
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let device = fields.next()?.to_string();
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    if perms.len() < 4 {
        return None;
    }
    let mut access = Access::empty();
    access.set(Access::READ, perms[0] == b'r');
    access.set(Access::WRITE, perms[1] == b'w');
    access.set(Access::EXEC, perms[2] == b'x');
    Some(KernelMapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        access,
        shared: perms[3] == b's',
        offset,
        device,
        inode,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_values_are_summed_over_the_mappings_that_meet_the_range() {
        let smaps = "\
1000-3000 rw-p 00000000 00:00 0
Size:                  8 kB
AnonHugePages:      2048 kB
3000-5000 rw-p 00000000 00:00 0
AnonHugePages:      4096 kB
5000-6000 r--p 00000000 08:01 42       /usr/lib/libc.so.6
AnonHugePages:         0 kB
7000-8000 rw-p 00000000 00:00 0
AnonHugePages:       512 kB
";
        let huge = |range| smaps_kib(smaps, "AnonHugePages", range);
        assert_eq!(huge(0x2000..0x4000), Some(6144));
        assert_eq!(huge(0x3000..0x5000), Some(4096));
        assert_eq!(huge(0x6000..0x7000), Some(0));
        assert_eq!(huge(0x7fff..0x9000), Some(512));
        assert_eq!(smaps_kib(smaps, "Size", 0x1000..0x1001), Some(8));
        assert_eq!(
            smaps_kib(
                "1000-2000 rw-p 0 0 0\nAnonHugePages: x kB\n",
                "AnonHugePages",
                0..0x1800
            ),
            None
        );
    }

    #[test]
    fn parses_lines_of_every_kind() {
        let text = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1048602                    /usr/bin/cat
55d0c0a02000-55d0c0a07000 r-xp 00002000 fd:01 1048602                    /usr/bin/cat
7ffc1a2b3000-7ffc1a2d4000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000010000 ---p 00000000 00:00 0 
7f0000010000-7f0000020000 rw-s 00000000 00:05 42                         /dev/zero (deleted)
garbage
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[0].start, 0x55d0c0a00000);
        assert_eq!(maps[0].access, Access::READ);
        assert!(maps[0].is_file());
        assert_eq!(maps[1].access, Access::READ | Access::EXEC);
        assert_eq!(maps[1].offset, 0x2000);
        assert_eq!(maps[2].path, "[stack]");
        assert!(!maps[2].is_file());
        assert_eq!(maps[3].access, Access::empty());
        assert_eq!(maps[3].path, "");
        assert!(maps[4].shared);
        assert_eq!(maps[4].path, "/dev/zero (deleted)");
    }

    #[test]
    fn reads_own_maps() {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let maps = parse_maps(&text);
        assert!(maps.iter().any(|m| m.path == "[stack]"));
        assert!(maps.windows(2).all(|w| w[0].end <= w[1].start));
    }
}
