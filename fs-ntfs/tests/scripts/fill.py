# Fills the source tree the NTFS tests copy into an ntfs-3g mount: deep
# tree, a 3,000-entry directory, sizes 0 B to 3 MiB, compressible files,
# hard and symbolic links; with --large also a 20 MiB file and a
# 10,000-entry directory (an index of three levels). Usage: fill.py DIR [--large]
import os, sys, random
src = sys.argv[1]
large = '--large' in sys.argv[2:]
rnd = random.Random(7)
def w(p, data):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, 'wb').write(data)
os.makedirs(f'{src}/deep/a/b/c/d/e/f/g/h/i/j', exist_ok=True)
w(f'{src}/deep/a/b/c/d/e/f/g/h/i/j/leaf.txt', b'deep leaf\n')
for n in [0, 1, 700, 4095, 4096, 4097, 100000, 3 << 20]:
    w(f'{src}/sizes/f{n}', rnd.randbytes(n))
os.makedirs(f'{src}/big')
for i in range(3000):
    open(f'{src}/big/entry-{i:05}.txt', 'wb').write(b'%d' % i)
w(f'{src}/compressed/text.txt', b''.join(b'line %d of a compressible file\n' % i for i in range(20000)))
w(f'{src}/compressed/random.bin', rnd.randbytes(70000))
w(f'{src}/links/target.txt', b'linked\n')
os.link(f'{src}/links/target.txt', f'{src}/links/hard.txt')
# Enough hard links with long names to overflow one FILE record (an
# $ATTRIBUTE_LIST and extension records).
for i in range(1, 16):
    os.link(f'{src}/links/target.txt', f'{src}/links/another-name-for-the-same-file-number-{i:02}.txt')
os.symlink('target.txt', f'{src}/links/sym')
os.symlink('../sizes', f'{src}/links/dirsym')
w(f'{src}/Mixed Case Ünïcödé.txt', b'unicode\n')
if large:
    w(f'{src}/sizes/f20971520', rnd.randbytes(20 << 20))
    os.makedirs(f'{src}/huge')
    for i in range(10000):
        open(f'{src}/huge/a-longer-file-name-for-a-deeper-index-{i:05}', 'wb').write(b'%d' % i)
