//! Reading volumes made by mkntfs and filled through ntfs-3g, compared with
//! the source tree, ntfs-3g's own tools and The Sleuth Kit; the shared
//! images made by Windows; and damaged volumes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use disk_io::{ErrorKind, FileDisk, ReadAt, Window};
use fs_ntfs::attribute::types;
use fs_ntfs::{Exported, ExportedAttribute, File, LinkTarget, NtfsVolume, StreamData, records};
use test_support::{have_all, sh, testdata};

const FILL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/fill.py");
const POST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/post.py");

/// What a path holds, as both sides see it.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(String),
}

/// Makes a volume with `cluster`-byte clusters and `sector`-byte sectors, copies the tree of
/// `fill.py` (`large`: with its 20 MiB file and 10,000-entry directory) into it through ntfs-3g and runs `post.py` inside the mount.
/// `None` (skipped, with the reason printed) when FUSE is not available.
fn build(cluster: u32, sector: u32, large: bool) -> Option<(tempfile::TempDir, PathBuf)> {
    if !have_all(&["mkntfs", "ntfs-3g", "python3"]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (flag, size) = if large { (" --large", 72) } else { ("", 48) };
    sh(&format!("python3 {FILL} src{flag}"), d);
    sh(
        &format!(
            "truncate -s {size}M v.img && mkntfs -q -F -Q -s {sector} -c {cluster} v.img >/dev/null 2>&1 && mkdir mnt"
        ),
        d,
    );
    let mounted = std::process::Command::new("ntfs-3g")
        .args(["v.img", "mnt"])
        .current_dir(d)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount with ntfs-3g (no FUSE here?)");
        return None;
    }
    // ntfs-3g compresses files written into a directory flagged
    // compressed (clusters of 4 KiB at most).
    let compress = if cluster <= 4096 {
        "python3 -c \"import os; os.setxattr('mnt/compressed', 'system.ntfs_attrib_be', (0x800).to_bytes(4, 'big'))\" && "
    } else {
        ""
    };
    let fill = format!("mkdir mnt/compressed && {compress}cp -a src/. mnt/ && python3 {POST} mnt");
    let out = std::process::Command::new("sh")
        .args(["-c", &fill])
        .current_dir(d)
        .output()
        .unwrap();
    sh("umount mnt", d);
    assert!(
        out.status.success(),
        "filling failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = d.join("v.img");
    Some((dir, img))
}

fn open_file(path: &Path, offset: u64) -> NtfsVolume<Window<FileDisk>> {
    let disk = FileDisk::open(path).unwrap();
    let size = disk.size() - offset;
    NtfsVolume::open(Window::new(disk, offset, size).unwrap()).unwrap()
}

fn read_data<D: ReadAt>(vol: &NtfsVolume<D>, file: &File, stream: &str) -> Vec<u8> {
    let name: Vec<u16> = stream.encode_utf16().collect();
    let s = file.stream(types::DATA, &name).unwrap().unwrap();
    let mut out = vec![0u8; s.size as usize];
    // Odd-sized pieces cross run, cluster and compression-unit boundaries.
    let mut at = 0;
    while at < out.len() {
        let end = (at + 12_345).min(out.len());
        let n = vol.read_stream(&s, at as u64, &mut out[at..end]).unwrap();
        assert_eq!(n, end - at);
        at = end;
    }
    let mut past = [0u8; 4];
    assert_eq!(vol.read_stream(&s, s.size, &mut past).unwrap(), 0);
    out
}

fn lookup<D: ReadAt>(vol: &NtfsVolume<D>, path: &str) -> File {
    let mut f = vol.file(records::ROOT).unwrap();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        let (rec, _) = vol
            .find(&f, c)
            .unwrap()
            .unwrap_or_else(|| panic!("{path}: no {c}"));
        f = vol.file(rec).unwrap();
    }
    f
}

/// Walks the volume like a directory listing does: long names only, no
/// metadata files.
fn walk<D: ReadAt>(
    vol: &NtfsVolume<D>,
    dir: u64,
    prefix: &str,
    out: &mut BTreeMap<String, (u64, Node)>,
) {
    let file = vol.file(dir).unwrap();
    for (rec, name) in vol.read_dir(&file).unwrap() {
        if !name.namespace.is_long() || rec < records::FIRST_USER {
            continue;
        }
        let path = format!("{prefix}/{}", name.name_string());
        let f = vol.file(rec).unwrap();
        assert!(f.in_use(), "{path}");
        let node = match vol.link_target(&f).unwrap() {
            Some(LinkTarget::Symlink(t) | LinkTarget::Junction(t)) => Node::Link(t),
            None if f.is_directory() => Node::Dir,
            None => Node::File(read_data(vol, &f, "")),
        };
        let is_dir = node == Node::Dir;
        out.insert(path.clone(), (rec, node));
        if is_dir {
            walk(vol, rec, &path, out);
        }
    }
}

fn host_tree(root: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) {
    for e in std::fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let path = format!("{prefix}/{}", e.file_name().to_str().unwrap());
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            out.insert(path, Node::Link(target.to_str().unwrap().to_string()));
        } else if t.is_dir() {
            out.insert(path.clone(), Node::Dir);
            host_tree(&e.path(), &path, out);
        } else {
            out.insert(path, Node::File(std::fs::read(e.path()).unwrap()));
        }
    }
}

fn check_volume(cluster: u32, dir: &Path, img: &Path) {
    let vol = open_file(img, 0);
    assert_eq!(vol.cluster_size(), cluster);
    assert_eq!(vol.version(), (3, 1));
    assert!(!vol.is_dirty());
    assert!(vol.warnings().is_empty(), "{:?}", vol.warnings());

    let mut ours = BTreeMap::new();
    walk(&vol, records::ROOT, "", &mut ours);
    let mut host = BTreeMap::new();
    host_tree(&dir.join("src"), "", &mut host);
    for (path, node) in &host {
        let (_, got) = ours.get(path).unwrap_or_else(|| panic!("{path} missing"));
        assert!(got == node, "{path} differs");
    }
    let extra: Vec<&String> = ours.keys().filter(|p| !host.contains_key(*p)).collect();
    assert_eq!(
        extra,
        [
            "/frag1",
            "/frag2",
            "/junction",
            "/sparse",
            "/streams.txt",
            "/winlink"
        ],
        "cluster {cluster}"
    );
    assert!(ours.contains_key("/big/entry-02999.txt"));
    check_export(&vol, &ours, cluster);

    // Reparse points made through ntfs-3g's reparse xattr.
    assert_eq!(ours["/winlink"].1, Node::Link("sizes\\f1".into()));
    assert_eq!(ours["/junction"].1, Node::Link("C:\\target".into()));

    // Hard links: one record, two names, link count 17.
    let (a, b) = (&ours["/links/target.txt"], &ours["/links/hard.txt"]);
    assert_eq!(a.0, b.0);
    assert_eq!(vol.file(a.0).unwrap().link_count().unwrap(), 17);

    // Named streams.
    let s = lookup(&vol, "/streams.txt");
    let mut streams = s.named_streams();
    streams.sort();
    assert_eq!(
        streams,
        [("large".to_string(), 10240), ("small".to_string(), 12)]
    );
    assert_eq!(read_data(&vol, &s, "small"), b"small stream");
    assert_eq!(
        read_data(&vol, &s, "large"),
        (0..40).flat_map(|_| 0..=255u8).collect::<Vec<_>>()
    );
    assert_eq!(read_data(&vol, &s, ""), b"main data\n");

    // Files appended to in turns.
    for name in ["frag1", "frag2"] {
        let f = lookup(&vol, name);
        let want: Vec<u8> = (0..300).flat_map(|i| [(i % 251) as u8; 4096]).collect();
        assert!(read_data(&vol, &f, "") == want, "{name}");
    }
    // The sparse file: data and sparse runs, $DATA in several extents.
    let f = lookup(&vol, "sparse");
    let extents = f.attributes.iter().filter(|a| a.ty == types::DATA).count();
    // 400 runs overflow a 1 KiB FILE record, not a 4 KiB one.
    let small_records = vol.boot_sector().file_record_size == 1024;
    assert!(extents >= 2 || !small_records, "{extents} $DATA extents");
    let stream = f.stream(types::DATA, &[]).unwrap().unwrap();
    assert!(stream.flags.sparse());
    let StreamData::Runs(runs) = &stream.data else {
        panic!("resident sparse file")
    };
    assert!(runs.len() >= 200, "{} runs", runs.len());
    assert!(runs.iter().any(|r| r.lcn.is_none()));
    let data = read_data(&vol, &f, "");
    assert_eq!(data.len(), 199 * 131072 + 4096);
    for (i, piece) in data.chunks(131072).enumerate() {
        assert!(
            piece[..4096].iter().all(|b| *b == 1 + (i % 250) as u8),
            "island {i}"
        );
        assert!(piece[4096..].iter().all(|b| *b == 0), "hole {i}");
    }

    // Compression where ntfs-3g applies it.
    let text = lookup(&vol, "/compressed/text.txt");
    let stream = text.stream(types::DATA, &[]).unwrap().unwrap();
    assert_eq!(
        stream.compression_unit != 0,
        cluster <= 4096,
        "cluster {cluster}"
    );

    // Case-insensitive lookup through $UpCase; deleted files are gone.
    let root = vol.file(records::ROOT).unwrap();
    let (rec, name) = vol.find(&root, "mixed case ÜNÏCÖDÉ.TXT").unwrap().unwrap();
    assert_eq!(name.name_string(), "Mixed Case Ünïcödé.txt");
    assert_eq!(rec, ours["/Mixed Case Ünïcödé.txt"].0);
    assert!(vol.find(&root, "filler-3").unwrap().is_none());
    // Lookups descend the B+ tree of the 3,000-entry directory.
    let big = lookup(&vol, "/big");
    for i in (0..3000).step_by(97).chain([2999]) {
        let name = format!("entry-{i:05}.txt");
        let (rec, _) = vol.find(&big, &name).unwrap().unwrap();
        assert_eq!(rec, ours[&format!("/big/{name}")].0);
        let (upper, found) = vol.find(&big, &name.to_uppercase()).unwrap().unwrap();
        assert_eq!((upper, found.name_string()), (rec, name));
    }
    assert!(vol.find(&big, "entry-03000.txt").unwrap().is_none());
    assert!(vol.find(&big, "a").unwrap().is_none());
    assert!(vol.find(&big, "zzz").unwrap().is_none());
    assert!(ours.keys().all(|p| !p.contains("filler")));

    // The Sleuth Kit and ntfs-3g's tools agree.
    if have_all(&["fls", "icat", "ntfsls", "ntfscat"]) {
        let fls = sh("fls -r -p -u v.img", dir);
        let mut theirs: Vec<String> = fls
            .lines()
            .filter_map(|l| l.split_once(":\t"))
            // Deleted names still in index slack are marked with '*'; some
            // (our deleted fillers) fls shows unmarked though their records
            // are free (istat: "Not Allocated", ntfsls agrees with us).
            .filter(|(meta, p)| !meta.contains('*') && !p.starts_with("filler-"))
            .map(|(_, p)| format!("/{p}"))
            .filter(|p| !p.starts_with("/$") && !p.contains(':'))
            .collect();
        theirs.sort();
        theirs.dedup();
        let mut mine: Vec<String> = ours.keys().cloned().collect();
        mine.sort();
        let only_theirs: Vec<&String> = theirs.iter().filter(|p| !mine.contains(p)).collect();
        let only_mine: Vec<&String> = mine.iter().filter(|p| !theirs.contains(p)).collect();
        assert!(
            only_theirs.is_empty() && only_mine.is_empty(),
            "fls only: {only_theirs:?}, ours only: {only_mine:?}"
        );
        for path in ["/sizes/f3145728", "/compressed/text.txt", "/frag2"] {
            let rec = ours[path].0;
            let Node::File(data) = &ours[path].1 else {
                panic!()
            };
            let icat = std::process::Command::new("icat")
                .args(["v.img", &rec.to_string()])
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(icat.stdout == *data, "icat {path}");
            let cat = std::process::Command::new("ntfscat")
                .args(["v.img", path])
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(cat.stdout == *data, "ntfscat {path}");
        }
        let ls = sh("ntfsls v.img -p /sizes", dir);
        let mut names: Vec<&str> = ls.lines().filter(|n| *n != "." && *n != "..").collect();
        names.retain(|n| *n != "f20971520");
        names.sort();
        assert_eq!(
            names,
            [
                "f0", "f1", "f100000", "f3145728", "f4095", "f4096", "f4097", "f700"
            ]
        );

        // Used clusters: the bits of $Bitmap as icat reads them.
        let bitmap = std::process::Command::new("icat")
            .args(["v.img", "6"])
            .current_dir(dir)
            .output()
            .unwrap()
            .stdout;
        let total = vol.boot_sector().total_clusters();
        let mut want: Vec<std::ops::Range<u64>> = Vec::new();
        for c in 0..total {
            if bitmap[(c / 8) as usize] & (1 << (c % 8)) != 0 {
                match want.last_mut() {
                    Some(r) if r.end == c => r.end += 1,
                    _ => want.push(c..c + 1),
                }
            }
        }
        assert_eq!(vol.used_clusters().unwrap(), want);
    }
}

/// The INDX record at `vcn` of directory `dir`'s `$I30` allocation: its
/// byte offset in the image.
fn index_block<D: ReadAt>(vol: &NtfsVolume<D>, dir: &File, vcn: u64) -> u64 {
    let i30: Vec<u16> = "$I30".encode_utf16().collect();
    let root = dir.stream(types::INDEX_ROOT, &i30).unwrap().unwrap();
    let StreamData::Resident(root) = root.data else {
        panic!()
    };
    let record_size = u64::from(u32::from_le_bytes(root[8..12].try_into().unwrap()));
    let allocation = dir.stream(types::INDEX_ALLOCATION, &i30).unwrap().unwrap();
    let StreamData::Runs(runs) = &allocation.data else {
        panic!()
    };
    let cs = u64::from(vol.cluster_size());
    let byte = vcn * if record_size >= cs { cs } else { 512 };
    let run = fs_ntfs::find_run(runs, byte / cs).unwrap();
    (run.lcn.unwrap() + byte / cs - run.vcn) * cs + byte % cs
}

/// The 20 MiB file and the 10,000-entry directory: every entry listed and
/// found, an index of at least three levels, the used-cluster count as
/// `ntfsinfo -m` and `ntfscluster` report it.
fn check_large(dir: &Path, img: &Path) {
    let vol = open_file(img, 0);
    let huge = lookup(&vol, "/huge");
    let names: Vec<String> = vol
        .read_dir(&huge)
        .unwrap()
        .into_iter()
        .filter(|(_, n)| n.namespace.is_long())
        .map(|(_, n)| n.name_string())
        .collect();
    let want: Vec<String> = (0..10000)
        .map(|i| format!("a-longer-file-name-for-a-deeper-index-{i:05}"))
        .collect();
    assert!(names == want, "{} entries in index order", names.len());
    for i in (0..10000).step_by(1111).chain([9999]) {
        let name = format!("A-LONGER-FILE-NAME-FOR-A-DEEPER-INDEX-{i:05}");
        let (rec, _) = vol.find(&huge, &name).unwrap().unwrap();
        let f = vol.file(rec).unwrap();
        assert_eq!(read_data(&vol, &f, ""), i.to_string().as_bytes());
    }
    // The root's first child node has children of its own: three levels.
    let i30: Vec<u16> = "$I30".encode_utf16().collect();
    let root = huge.stream(types::INDEX_ROOT, &i30).unwrap().unwrap();
    let StreamData::Resident(root) = root.data else {
        panic!()
    };
    let node = 0x10 + u32::from_le_bytes(root[0x10..0x14].try_into().unwrap()) as usize;
    let len = u16::from_le_bytes([root[node + 8], root[node + 9]]) as usize;
    assert!(root[node + 12] & 1 != 0, "the root has children");
    let vcn = u64::from_le_bytes(root[node + len - 8..node + len].try_into().unwrap());
    let at = index_block(&vol, &huge, vcn) as usize;
    let bytes = std::fs::read(img).unwrap();
    assert_eq!(&bytes[at..at + 4], b"INDX");
    assert!(
        bytes[at + 0x24] & 1 != 0,
        "the level below the root has children"
    );

    let f = lookup(&vol, "/sizes/f20971520");
    let want = std::fs::read(dir.join("src/sizes/f20971520")).unwrap();
    assert!(read_data(&vol, &f, "") == want, "20 MiB file");

    // ntfsinfo and ntfscluster count the same free clusters.
    if !have_all(&["ntfsinfo", "ntfscluster"]) {
        return;
    }
    let used: u64 = vol
        .used_clusters()
        .unwrap()
        .iter()
        .map(|r| r.end - r.start)
        .sum();
    let total = vol.boot_sector().total_clusters();
    let info = sh("ntfsinfo -m v.img", dir);
    let free: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Free Clusters: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(used, total - free, "ntfsinfo -m: {free} free of {total}");
    let cluster = sh("ntfscluster -i v.img", dir);
    let free_bytes: u64 = cluster
        .lines()
        .find_map(|l| l.strip_prefix("bytes of free space"))
        .and_then(|l| l.trim_start_matches([' ', ':']).trim().parse().ok())
        .unwrap();
    assert_eq!(
        used * u64::from(vol.cluster_size()),
        total * u64::from(vol.cluster_size()) - free_bytes
    );
}

/// Reassembles stream `name` of `file` from its exported attributes: a
/// resident value whole, else the clusters of every extent placed at their
/// VCNs, cut at the data size, zeros past the initialised size. `None` for
/// a compressed stream (its clusters are stored compressed).
fn reassemble<D: ReadAt>(vol: &NtfsVolume<D>, file: &File, name: &str) -> Option<Vec<u8>> {
    let name: Vec<u16> = name.encode_utf16().collect();
    let attrs = vol.export_attributes(file).unwrap();
    // Record order: the base record first, as parsed.
    let records: Vec<u64> = attrs.iter().map(|a| a.record).collect();
    assert_eq!(records.first(), Some(&file.number));
    for a in &attrs {
        assert_eq!(
            &a.header[..4],
            &a.ty.to_le_bytes(),
            "attribute type in the header"
        );
        assert_eq!(a.header[8] == 0, a.is_resident());
        assert_eq!(
            u32::from_le_bytes(a.header[4..8].try_into().unwrap()) as usize,
            a.header.len()
        );
    }
    let parts: Vec<&ExportedAttribute> = attrs
        .iter()
        .filter(|a| a.ty == types::DATA && a.name == name)
        .collect();
    if let [one] = parts[..] {
        if let Exported::Resident(v) = &one.content {
            return Some(v.clone());
        }
    }
    if parts.iter().any(|a| a.flags.compressed()) {
        return None;
    }
    let cs = u64::from(vol.cluster_size());
    let (size, init) = parts
        .iter()
        .find_map(|a| match &a.content {
            Exported::NonResident(n) if n.start_vcn == 0 => Some((n.data_size, n.initialized_size)),
            _ => None,
        })
        .unwrap();
    let mut out = vec![0u8; size as usize];
    for a in &parts {
        vol.export_data(a, &mut |vcn, bytes| {
            let at = vcn * cs;
            let end = (at + bytes.len() as u64).min(init);
            if at < end {
                out[at as usize..end as usize].copy_from_slice(&bytes[..(end - at) as usize]);
            }
            Ok(())
        })
        .unwrap();
    }
    Some(out)
}

/// Attribute-level export: every file's data stream reassembles from its
/// exported attributes (resident whole, non-resident from the clusters of
/// its runs) to the bytes read through the stream.
fn check_export<D: ReadAt>(
    vol: &NtfsVolume<D>,
    ours: &BTreeMap<String, (u64, Node)>,
    cluster: u32,
) {
    let (mut resident, mut clusters, mut compressed) = (0, 0, 0);
    for (path, (rec, node)) in ours {
        let Node::File(data) = node else { continue };
        let f = vol.file(*rec).unwrap();
        match reassemble(vol, &f, "") {
            Some(got) => {
                assert!(
                    got == *data,
                    "{path}: exported attributes differ from the file"
                );
                if matches!(
                    f.stream(types::DATA, &[]).unwrap().unwrap().data,
                    StreamData::Resident(_)
                ) {
                    resident += 1;
                } else {
                    clusters += 1;
                }
            }
            None => compressed += 1,
        }
    }
    assert!(
        resident > 10 && clusters > 5,
        "{resident} resident, {clusters} non-resident"
    );
    assert_eq!(compressed > 0, cluster <= 4096);
    let s = lookup(vol, "/streams.txt");
    assert_eq!(reassemble(vol, &s, "small").unwrap(), b"small stream");
    assert_eq!(
        reassemble(vol, &s, "large").unwrap(),
        read_data(vol, &s, "large")
    );
}

/// Security descriptors through `$Secure` equal what ntfs-3g returns as
/// `system.ntfs_acl` (the raw self-relative descriptor), for files
/// ntfs-3g created (a `$SECURITY_DESCRIPTOR` attribute each) and the one
/// post.py sets (in `$Secure`).
fn check_security(dir: &Path, img: &Path) {
    let vol = open_file(img, 0);
    let paths = [
        "sizes/f700",
        "sizes/f0",
        "deep/a",
        "links/target.txt",
        "big",
    ];
    sh("mkdir -p ro && ntfs-3g -o ro v.img ro", dir);
    let script = format!(
        "import os, sys\nfor p in {paths:?}: sys.stdout.write(os.getxattr('ro/' + p, 'system.ntfs_acl').hex() + '\\n')"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir)
        .output()
        .unwrap();
    sh("umount ro", dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(theirs.len(), paths.len());
    for (path, want) in paths.iter().zip(&theirs) {
        let f = lookup(&vol, path);
        let id = f.standard_information().unwrap().unwrap().security_id;
        let attr = f
            .attributes
            .iter()
            .any(|a| a.ty == types::SECURITY_DESCRIPTOR);
        // mkntfs's files and the descriptor set through ntfs-3g live in
        // $Secure; files ntfs-3g creates carry their own attribute.
        let in_secure = *path == "sizes/f700";
        assert_eq!(
            (id.is_some_and(|i| i >= 0x100), attr),
            (in_secure, !in_secure),
            "{path}: security id {id:?}"
        );
        let sd = vol.security_descriptor(&f).unwrap().unwrap();
        let hex: String = sd.raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex, want, "{path}");
    }
    let f = lookup(&vol, "sizes/f700");
    let sd = vol.security_descriptor(&f).unwrap().unwrap();
    assert_eq!(sd.owner.unwrap().to_string(), "S-1-5-21-1-2-3-1000");
    assert_eq!(sd.group.unwrap().to_string(), "S-1-5-21-1-2-3-513");
    let other = vol
        .security_descriptor(&lookup(&vol, "sizes/f0"))
        .unwrap()
        .unwrap();
    assert_ne!(other.raw, sd.raw);
    // mkntfs's root directory has its own attribute (owner LocalSystem, as
    // ntfsinfo shows; ntfs-3g will not read it back: EIO); $Secure itself
    // uses security id 0x101 of $Secure.
    let root = vol.file(records::ROOT).unwrap();
    let sd = vol.security_descriptor(&root).unwrap().unwrap();
    assert_eq!(sd.owner.unwrap().to_string(), "S-1-5-18");
    let secure = vol.file(records::SECURE).unwrap();
    let id = secure.standard_information().unwrap().unwrap().security_id;
    assert_eq!(id, Some(0x101));
    let sd = vol.security_descriptor(&secure).unwrap().unwrap();
    assert_eq!(Some(sd), vol.security_descriptor_by_id(0x101).unwrap());
    // An id $SII does not hold.
    assert!(vol.security_descriptor_by_id(0xfff_ffff).unwrap().is_none());
}

#[test]
fn mkntfs_512_byte_clusters() {
    if let Some((dir, img)) = build(512, 512, false) {
        check_volume(512, dir.path(), &img);
    }
}

#[test]
fn mkntfs_4k_clusters_and_damage() {
    if let Some((dir, img)) = build(4096, 512, true) {
        check_volume(4096, dir.path(), &img);
        check_large(dir.path(), &img);
        check_security(dir.path(), &img);
        damage(&img);
    }
}

#[test]
fn mkntfs_64k_clusters_4k_sectors() {
    // 4 KiB FILE records, index records smaller than a cluster.
    if let Some((dir, img)) = build(65536, 4096, false) {
        check_volume(65536, dir.path(), &img);
    }
}

/// Byte offset of MFT record `n` in a volume whose $MFT starts contiguous.
fn record_offset(vol: &NtfsVolume<Window<FileDisk>>, n: u64) -> u64 {
    vol.record(n).unwrap().position
}

fn damage(img: &Path) {
    let vol = open_file(img, 0);
    let pristine = std::fs::read(img).unwrap();
    let root = vol.file(records::ROOT).unwrap();
    let find = |name: &str| vol.find(&root, name).unwrap().unwrap().0;

    // A torn record: the update sequence number at the end of a sector differs.
    let rec = find("streams.txt");
    let at = record_offset(&vol, rec);
    let mut bytes = pristine.clone();
    bytes[at as usize + 1022] ^= 0xff;
    let v = NtfsVolume::open(bytes).unwrap();
    let e = v.file(rec).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert_eq!(e.offset(), Some(at + 1022));
    assert!(
        e.to_string().contains(&format!("MFT record {rec} is torn")),
        "{e}"
    );

    // A run list that points past the end of the volume.
    let f = vol.file(find("frag1")).unwrap();
    let a = f
        .attributes
        .iter()
        .find(|a| a.ty == types::DATA && !a.value.is_resident())
        .unwrap();
    let mut bytes = pristine.clone();
    let attr = a.position as usize;
    let runs_at = attr + u16::from_le_bytes([bytes[attr + 0x20], bytes[attr + 0x21]]) as usize;
    let header = bytes[runs_at];
    let (len_size, off_size) = ((header & 15) as usize, (header >> 4) as usize);
    for i in 0..off_size {
        bytes[runs_at + 1 + len_size + i] = if i + 1 == off_size { 0x7f } else { 0xff };
    }
    let v = NtfsVolume::open(bytes).unwrap();
    let e = v.file(f.number).unwrap_err();
    assert!(e.to_string().contains("reaches past the volume"), "{e}");
    assert!(
        e.to_string().contains(&format!("MFT record {}", f.number)),
        "{e}"
    );
    assert_eq!(e.offset(), Some(runs_at as u64));

    // An LZNT1 chunk whose first token reaches back before the chunk.
    let text = lookup(&vol, "/compressed/text.txt");
    let stream = text.stream(types::DATA, &[]).unwrap().unwrap();
    if stream.compression_unit != 0 {
        let StreamData::Runs(runs) = &stream.data else {
            panic!()
        };
        let at = (runs[0].lcn.unwrap() * u64::from(vol.cluster_size())) as usize;
        let mut bytes = pristine.clone();
        assert_eq!(bytes[at + 1] & 0xb0, 0xb0, "a compressed chunk");
        bytes[at + 2] = 0x01;
        let v = NtfsVolume::open(bytes).unwrap();
        let e = v.read_stream(&stream, 0, &mut [0u8; 100]).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("MFT record {}", text.number))
                && e.to_string().contains("LZNT1 chunk at byte 0"),
            "{e}"
        );
        assert_eq!(e.offset(), Some(at as u64));
    }

    // An $SDS entry whose header names another security id than $SII.
    let f = lookup(&vol, "/sizes/f700");
    let sd = vol.security_descriptor(&f).unwrap().unwrap();
    let at = pristine
        .windows(sd.raw.len())
        .position(|w| w == sd.raw.as_slice())
        .unwrap();
    let mut bytes = pristine.clone();
    bytes[at - 16] ^= 0x40;
    let v = NtfsVolume::open(bytes).unwrap();
    let e = v.security_descriptor(&f).unwrap_err();
    assert!(
        e.to_string().contains("$SDS entry")
            && e.to_string().contains(&format!("file {}", f.number)),
        "{e}"
    );
    assert_eq!(e.offset(), Some(at as u64 - 20));

    // An index loop: a child pointer inside the top INDX node of the
    // 3,000-entry directory names that node itself.
    let big = vol.file(find("big")).unwrap();
    let i30: Vec<u16> = "$I30".encode_utf16().collect();
    let root_value = big.stream(types::INDEX_ROOT, &i30).unwrap().unwrap();
    let StreamData::Resident(root_value) = root_value.data else {
        panic!()
    };
    let record_size = u32::from_le_bytes(root_value[8..12].try_into().unwrap()) as u64;
    let node = 0x10 + u32::from_le_bytes(root_value[0x10..0x14].try_into().unwrap()) as usize;
    let len = u16::from_le_bytes([root_value[node + 8], root_value[node + 9]]) as usize;
    assert!(
        root_value[node + 12] & 1 != 0,
        "the root of /big has children"
    );
    let top_vcn = u64::from_le_bytes(root_value[node + len - 8..node + len].try_into().unwrap());
    let allocation = big.stream(types::INDEX_ALLOCATION, &i30).unwrap().unwrap();
    let StreamData::Runs(runs) = &allocation.data else {
        panic!()
    };
    let cs = u64::from(vol.cluster_size());
    let byte = top_vcn * if record_size >= cs { cs } else { 512 };
    let run = fs_ntfs::find_run(runs, byte / cs).unwrap();
    let block = ((run.lcn.unwrap() + byte / cs - run.vcn) * cs + byte % cs) as usize;
    let mut bytes = pristine.clone();
    assert_eq!(&bytes[block..block + 4], b"INDX");
    let mut e_at = block
        + 0x18
        + u32::from_le_bytes(bytes[block + 0x18..block + 0x1c].try_into().unwrap()) as usize;
    loop {
        let len = u16::from_le_bytes([bytes[e_at + 8], bytes[e_at + 9]]) as usize;
        let flags = bytes[e_at + 12];
        let child = e_at + len - 8;
        // Stay clear of the update-sequence bytes at the end of each sector.
        if flags & 1 != 0 && (child - block) % 512 + 8 <= 510 {
            bytes[child..child + 8].copy_from_slice(&top_vcn.to_le_bytes());
            break;
        }
        assert!(flags & 2 == 0, "no child pointer to redirect");
        e_at += len;
    }
    let v = NtfsVolume::open(bytes).unwrap();
    let e = v.read_dir(&v.file(big.number).unwrap()).unwrap_err();
    assert!(e.to_string().contains("index loop"), "{e}");
    assert_eq!(e.offset(), Some(block as u64));

    // A $MFTMirr that differs from $MFT is reported, not fatal.
    let mut bytes = pristine.clone();
    let mirror = vol.boot_sector().mft_mirror_lcn * u64::from(vol.cluster_size());
    bytes[mirror as usize + 2 * 1024 + 0x100] ^= 0x55;
    let v = NtfsVolume::open(bytes).unwrap();
    assert_eq!(v.warnings().len(), 1, "{:?}", v.warnings());
    assert!(
        v.warnings()[0].contains("MFT record 2"),
        "{:?}",
        v.warnings()
    );

    // The dirty flag of $VOLUME_INFORMATION.
    let volume = vol.file(3).unwrap();
    let info = volume.attributes.iter().find(|a| a.ty == 0x70).unwrap();
    let mut bytes = pristine.clone();
    let attr = info.position as usize;
    let value = attr + u16::from_le_bytes([bytes[attr + 0x14], bytes[attr + 0x15]]) as usize;
    bytes[value + 10] |= 1;
    assert!(NtfsVolume::open(bytes).unwrap().is_dirty());

    // An encrypted file is recognised; reading it is unsupported.
    let f = vol.file(find("frag1")).unwrap();
    let data = f.attributes.iter().find(|a| a.ty == types::DATA).unwrap();
    let mut bytes = pristine.clone();
    bytes[data.position as usize + 0x0d] |= 0x40;
    let v = NtfsVolume::open(bytes).unwrap();
    let f = v.file(f.number).unwrap();
    assert!(f.is_encrypted());
    let s = f.stream(types::DATA, &[]).unwrap().unwrap();
    let e = v.read_stream(&s, 0, &mut [0u8; 16]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);

    // An extension record holding an $ATTRIBUTE_LIST of its own (lists
    // that lead to lists) is refused, not followed.
    let f = vol.file(find("sparse")).unwrap();
    let moved = f
        .attributes
        .iter()
        .find(|a| a.record != f.number)
        .expect("an extension record");
    let mut bytes = pristine.clone();
    bytes[moved.position as usize] = 0x20;
    let v = NtfsVolume::open(bytes).unwrap();
    let e = v.file(f.number).unwrap_err();
    assert!(e.to_string().contains("(a cycle)"), "{e}");
    assert_eq!(e.offset(), Some(moved.position));

    // An attribute list entry that points into another file's record.
    let with_list = (records::FIRST_USER..vol.record_count())
        .filter_map(|n| vol.file(n).ok())
        .find(|f| f.in_use() && f.attributes.iter().any(|a| a.ty == types::ATTRIBUTE_LIST));
    if let Some(f) = with_list {
        let list = f
            .attributes
            .iter()
            .find(|a| a.ty == types::ATTRIBUTE_LIST)
            .unwrap();
        let mut bytes = pristine.clone();
        let attr = list.position as usize;
        let (value, len) = match &list.value {
            fs_ntfs::Value::Resident(v) => (
                attr + u16::from_le_bytes([bytes[attr + 0x14], bytes[attr + 0x15]]) as usize,
                v.len(),
            ),
            fs_ntfs::Value::NonResident(n) => {
                assert!(n.data_size <= u64::from(vol.cluster_size()));
                (
                    (n.runs[0].lcn.unwrap() * u64::from(vol.cluster_size())) as usize,
                    n.data_size as usize,
                )
            }
        };
        let mut at = value;
        while at < value + len {
            let rec = u64::from_le_bytes(bytes[at + 0x10..at + 0x18].try_into().unwrap())
                & 0xffff_ffff_ffff;
            if rec != f.number {
                // Point it at the root directory's record.
                bytes[at + 0x10..at + 0x16].copy_from_slice(&5u64.to_le_bytes()[..6]);
            }
            at += u16::from_le_bytes([bytes[at + 4], bytes[at + 5]]) as usize;
        }
        let v = NtfsVolume::open(bytes).unwrap();
        let e = v.file(f.number).unwrap_err();
        assert!(e.to_string().contains("points at MFT record 5"), "{e}");
    } else {
        panic!("no file with an $ATTRIBUTE_LIST in the image");
    }
}

#[test]
fn colinfinck_testfs1() {
    let Some(path) = testdata("ntfs-colinfinck/testfs1") else {
        return;
    };
    let vol = open_file(&path, 0);
    assert_eq!(vol.label(), Some("mylabel"));
    assert_eq!(vol.cluster_size(), 512);
    let f = lookup(&vol, "file-with-12345");
    assert_eq!(read_data(&vol, &f, ""), b"12345");
    let f = lookup(&vol, "empty-file");
    assert_eq!(read_data(&vol, &f, ""), b"");
    // 2021-01-01 13:37 in the README's time zone (CET): 12:37 UTC.
    assert_eq!(
        f.standard_information().unwrap().unwrap().mtime() / 60,
        1_609_504_620 / 60
    );
    let f = lookup(&vol, "1000-bytes-file");
    assert_eq!(read_data(&vol, &f, "").len(), 1000);
    let sparse = lookup(&vol, "sparse-file");
    let data = read_data(&vol, &sparse, "");
    assert!(data.len() > 500_000);
    let subdirs = lookup(&vol, "many_subdirs");
    let names: Vec<String> = vol
        .read_dir(&subdirs)
        .unwrap()
        .into_iter()
        .filter(|(_, n)| n.namespace.is_long())
        .map(|(_, n)| n.name_string())
        .collect();
    assert_eq!(names.len(), 512);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "index order");
    if have_all(&["ntfscat"]) {
        let dir = path.parent().unwrap();
        for (name, f) in [
            ("1000-bytes-file", lookup(&vol, "1000-bytes-file")),
            ("sparse-file", sparse),
        ] {
            let cat = std::process::Command::new("ntfscat")
                .args(["testfs1", name])
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(cat.stdout == read_data(&vol, &f, ""), "{name}");
        }
    }
}

#[test]
fn msuhanov_windows_images() {
    if !have_all(&["gzip", "icat"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, label, file, size) in [
        ("ntfs-lastaccess", "Last access", "/test/1.txt", 143),
        ("ntfs-ramslack", "RAM Slack", "/1.txt", 6460),
    ] {
        let Some(gz) = testdata(&format!("ntfs-msuhanov/{name}.sanitized.raw.gz")) else {
            return;
        };
        sh(&format!("gzip -dc '{}' > d.img", gz.display()), dir.path());
        let img = dir.path().join("d.img");
        let vol = open_file(&img, 128 * 512);
        assert_eq!(vol.label(), Some(label));
        assert!(vol.warnings().is_empty(), "{:?}", vol.warnings());
        let f = lookup(&vol, file);
        let data = read_data(&vol, &f, "");
        assert_eq!(data.len(), size);
        let stream = f.stream(types::DATA, &[]).unwrap().unwrap();
        assert_eq!(
            stream.compression_unit != 0,
            name == "ntfs-ramslack",
            "{name}"
        );
        let icat = std::process::Command::new("icat")
            .args(["-o", "128", "d.img", &f.number.to_string()])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(icat.stdout == data, "{name}{file}");
        let mut all = BTreeMap::new();
        walk(&vol, records::ROOT, "", &mut all);
        assert!(all.contains_key("/System Volume Information"));
        assert!(!vol.used_clusters().unwrap().is_empty());
    }
}
