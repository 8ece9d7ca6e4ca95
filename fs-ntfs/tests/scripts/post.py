# Adds what a plain copy cannot, inside the ntfs-3g mount: named streams,
# a fragmented file, Windows reparse points, deleted files. Usage: post.py MOUNT
import os, sys, struct
m = sys.argv[1]
# Named streams (ntfs-3g streams_interface=xattr: user.* are named $DATA streams).
open(f'{m}/streams.txt', 'wb').write(b'main data\n')
os.setxattr(f'{m}/streams.txt', 'user.small', b'small stream')
os.setxattr(f'{m}/streams.txt', 'user.large', bytes(range(256)) * 40)
# Fill the free space with 64 KiB files and delete every other one, so
# that the free space is all holes.
fillers = []
try:
    for i in range(100000):
        name = f'{m}/filler-{i}'
        fillers.append(name)
        with open(name, 'wb') as f:
            f.write(b'f' * 65536)
except OSError:
    pass
for name in fillers[::2]:
    os.unlink(name)
# A file fragmented into many runs: alternate appends to two files.
for i in range(300):
    for name in ('frag1', 'frag2'):
        with open(f'{m}/{name}', 'ab') as f:
            f.write(bytes([i % 251]) * 4096)
# Files created then deleted: the other fillers.
for name in fillers[1::2]:
    try:
        os.unlink(name)
    except OSError:
        pass
# A sparse file of 200 islands: hundreds of runs, $DATA in several
# extents (extension records through $ATTRIBUTE_LIST).
with open(f'{m}/sparse', 'wb') as f:
    for i in range(200):
        f.seek(i * 131072)
        f.write(bytes([1 + i % 250]) * 4096)
# Windows reparse points: a relative symbolic link and a junction.
def reparse(tag, sub, prn, flags):
    s, p = sub.encode('utf-16-le'), prn.encode('utf-16-le')
    body = struct.pack('<HHHH', 0, len(s), len(s), len(p))
    if flags is not None:
        body += struct.pack('<I', flags)
    body += s + p
    return struct.pack('<IHH', tag, len(body), 0) + body
open(f'{m}/winlink', 'wb').close()
os.setxattr(f'{m}/winlink', 'system.ntfs_reparse_data', reparse(0xa000000c, 'sizes\\f1', 'sizes\\f1', 1))
os.mkdir(f'{m}/junction')
os.setxattr(f'{m}/junction', 'system.ntfs_reparse_data', reparse(0xa0000003, '\\??\\C:\\target', 'C:\\target', None))

# A security descriptor of our own (owner S-1-5-21-1-2-3-1000): a new
# entry in $Secure's $SDS stream and $SII index.
def sid(auth, *subs):
    return struct.pack('<BB', 1, len(subs)) + auth.to_bytes(6, 'big') + b''.join(struct.pack('<I', s) for s in subs)
owner, group, everyone = sid(5, 21, 1, 2, 3, 1000), sid(5, 21, 1, 2, 3, 513), sid(1, 0)
ace = struct.pack('<BBHI', 0, 0, 8 + len(everyone), 0x1f01ff) + everyone
dacl = struct.pack('<BBHHH', 2, 0, 8 + len(ace), 1, 0) + ace
sd = struct.pack('<BBHIIII', 1, 0, 0x8004, 20, 20 + len(owner), 0, 20 + len(owner) + len(group)) + owner + group + dacl
os.setxattr(f'{m}/sizes/f700', 'system.ntfs_acl', sd)
