//! A small GGUF rewriter for tests: read a model's header, change its metadata or bytes, and write a new file
//! with the original tensor data after it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A metadata entry: key, value type tag, and the value's raw bytes (after the type tag).
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub ty: u32,
    pub raw: Vec<u8>,
}

/// A GGUF file held as its header parts, with the tensor data left in the original file.
#[derive(Clone, Debug)]
pub struct Gguf {
    pub version: u32,
    pub n_tensors: u64,
    pub entries: Vec<Entry>,
    /// The tensor table, as it was.
    pub tensor_info: Vec<u8>,
    pub alignment: u64,
    source: std::path::PathBuf,
    data_start: u64,
}

fn scalar_size(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    /// Skips a value of type `ty`.
    fn skip_value(&mut self, ty: u32) {
        match ty {
            8 => {
                let n = self.u64() as usize;
                self.take(n);
            }
            9 => {
                let elem = self.u32();
                let count = self.u64();
                for _ in 0..count {
                    self.skip_value(elem);
                }
            }
            t => {
                self.take(scalar_size(t).unwrap());
            }
        }
    }
}

impl Gguf {
    /// Reads the header of a well-formed GGUF file.
    pub fn read(path: &Path) -> Gguf {
        let mut f = std::fs::File::open(path).unwrap();
        // The header of the test models is a few MB (the vocabulary); read enough of it.
        let mut head = vec![0u8; 16 << 20];
        let n = f.read(&mut head).unwrap();
        let mut total = n;
        while total < head.len() {
            let n = f.read(&mut head[total..]).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        head.truncate(total);
        let mut c = Cursor { b: &head, pos: 0 };
        assert_eq!(c.take(4), b"GGUF");
        let version = c.u32();
        let n_tensors = c.u64();
        let n_kv = c.u64();
        let mut entries = Vec::new();
        let mut alignment = 32;
        for _ in 0..n_kv {
            let key = c.string();
            let ty = c.u32();
            let start = c.pos;
            c.skip_value(ty);
            let raw = head[start..c.pos].to_vec();
            if key == "general.alignment" {
                alignment = u64::from(u32::from_le_bytes(raw[..4].try_into().unwrap()));
            }
            entries.push(Entry { key, ty, raw });
        }
        let info_start = c.pos;
        for _ in 0..n_tensors {
            c.string();
            let dims = c.u32();
            for _ in 0..dims {
                c.u64();
            }
            c.u32();
            c.u64();
        }
        let tensor_info = head[info_start..c.pos].to_vec();
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        Gguf { version, n_tensors, entries, tensor_info, alignment, source: path.to_owned(), data_start }
    }

    /// The header bytes as they would be written.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.n_tensors.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&(e.key.len() as u64).to_le_bytes());
            out.extend_from_slice(e.key.as_bytes());
            out.extend_from_slice(&e.ty.to_le_bytes());
            out.extend_from_slice(&e.raw);
        }
        out.extend_from_slice(&self.tensor_info);
        out
    }

    /// Writes `header` (possibly mutated), padding to the alignment, then the original tensor data.
    pub fn write_with_header(&self, header: &[u8], path: &Path) {
        let mut out = std::fs::File::create(path).unwrap();
        out.write_all(header).unwrap();
        let padded = (header.len() as u64).div_ceil(self.alignment) * self.alignment;
        out.write_all(&vec![0u8; (padded - header.len() as u64) as usize]).unwrap();
        let mut src = std::fs::File::open(&self.source).unwrap();
        src.seek(SeekFrom::Start(self.data_start)).unwrap();
        std::io::copy(&mut src, &mut out).unwrap();
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) {
        self.write_with_header(&self.header(), path);
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Sets a metadata value (replacing or adding the entry).
    pub fn set(&mut self, key: &str, ty: u32, raw: Vec<u8>) -> &mut Self {
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => {
                e.ty = ty;
                e.raw = raw;
            }
            None => self.entries.push(Entry { key: key.into(), ty, raw }),
        }
        self
    }

    pub fn set_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.set(key, 4, v.to_le_bytes().to_vec())
    }

    pub fn set_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.set(key, 6, v.to_le_bytes().to_vec())
    }

    pub fn set_str(&mut self, key: &str, v: &str) -> &mut Self {
        let mut raw = (v.len() as u64).to_le_bytes().to_vec();
        raw.extend_from_slice(v.as_bytes());
        self.set(key, 8, raw)
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.entries.retain(|e| e.key != key);
        self
    }

    /// Replaces token `index` of the vocabulary with `text`.
    pub fn set_token(&mut self, index: usize, text: &str) -> &mut Self {
        let e = self.entries.iter_mut().find(|e| e.key == "tokenizer.ggml.tokens").unwrap();
        let mut c = Cursor { b: &e.raw, pos: 0 };
        let elem = c.u32();
        let count = c.u64();
        let mut tokens = Vec::with_capacity(count as usize);
        for _ in 0..count {
            tokens.push(c.string());
        }
        tokens[index] = text.to_owned();
        let mut raw = elem.to_le_bytes().to_vec();
        raw.extend_from_slice(&count.to_le_bytes());
        for t in &tokens {
            raw.extend_from_slice(&(t.len() as u64).to_le_bytes());
            raw.extend_from_slice(t.as_bytes());
        }
        e.raw = raw;
        self
    }

    /// The vocabulary's token `index`.
    pub fn token(&self, index: usize) -> String {
        let e = self.get("tokenizer.ggml.tokens").unwrap();
        let mut c = Cursor { b: &e.raw, pos: 0 };
        c.u32();
        c.u64();
        for _ in 0..index {
            c.string();
        }
        c.string()
    }
}
