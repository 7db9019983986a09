//! Parser for `nvidia-smi topo -m` output.
//!
//! The output is a matrix. A header names the device columns (GPUs, then NICs)
//! and after them a few information columns ("CPU Affinity", "NUMA Affinity",
//! "GPU NUMA ID"); one row per GPU follows, then usually one row per NIC, then
//! a legend. Outputs found in the wild differ in ways the parser tolerates:
//!
//! - cells are separated by tabs, or by runs of spaces when the output went
//!   through a terminal or a forum that expanded the tabs;
//! - the command line itself may come first, when the output was pasted;
//! - NICs are called `NIC0`.. or by their device name (`mlx5_0`), and newer
//!   drivers map `NIC0` to a device name in a "NIC Legend:" section;
//! - the header may name more NIC columns than there are NIC rows, so a NIC's
//!   links are read from the GPU rows' columns, and NIC rows only checked;
//! - information cells may be empty, `N/A`, or missing altogether.
//!
//! Anything else is an error naming the 1-based line it was found on.

use std::collections::{HashMap, HashSet};

use phalanx_core::topology::model::{GpuDevice, GpuTopology, Link, NicDevice, TopologyError, UnknownLink};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TopoParseError {
    /// 1-based line number in the input.
    pub line: usize,
    pub message: String,
}

/// What is wrong with the input, before it is tied to a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Problem {
    #[error("no header line (one naming GPU0, GPU1, ... as columns) in the input")]
    NoHeader,
    #[error("expected the header line naming GPU0, GPU1, ... as columns, found {0:?}")]
    NotAHeader(String),
    #[error("{0} row before the header line naming the columns")]
    RowBeforeHeader(String),
    #[error("header names column {0} twice")]
    DuplicateColumn(String),
    #[error("column {0}: GPU number too large")]
    GpuIndexTooLarge(String),
    #[error("{label} row has {found} link cells, header names {expected} devices")]
    CellCount { label: String, found: usize, expected: usize },
    #[error("column {column}: {err}")]
    BadLink { column: String, err: UnknownLink },
    #[error("column {column}: X (a device's link to itself) between {row} and {column}")]
    OwnLinkToOther { row: String, column: String },
    #[error("expected the {expected} row, found a row labelled {found:?}")]
    UnexpectedRow { expected: String, found: String },
    #[error("row label {0:?} is not a NIC named in the header")]
    UnknownRow(String),
    #[error("second {0} row")]
    DuplicateRow(String),
    #[error("the matrix ends after {found} of {expected} GPU rows ({missing} is missing)")]
    MissingRows { found: usize, expected: usize, missing: String },
    #[error("column {gpu}: {nic} row says {nic_says}, but the {gpu} row says {gpu_says} for {nic}")]
    NicMismatch { nic: String, gpu: String, nic_says: Link, gpu_says: Link },
    #[error("column NUMA Affinity: expected a NUMA node number or N/A, found {0:?}")]
    BadNuma(String),
    #[error("column {column}: {row} row says {row_says}, but the {column} row says {column_says}")]
    Asymmetric { row: String, column: String, row_says: Link, column_says: Link },
    #[error("column {0}: a GPU's link to itself must be X")]
    Diagonal(String),
    #[error("{0}")]
    Topology(TopologyError),
}

impl Problem {
    fn at(self, line: usize) -> TopoParseError {
        TopoParseError { line, message: self.to_string() }
    }
}

/// Parses the text `nvidia-smi topo -m` prints.
pub fn parse(text: &str) -> Result<GpuTopology, TopoParseError> {
    // End-of-input problems point at the last line: an editor can jump there.
    let last_line = text.lines().count().max(1);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let header = read_header(&mut lines).ok_or_else(|| Problem::NoHeader.at(last_line))??;
    let matrix = read_matrix(&header, &mut lines, last_line)?;
    let legend = read_nic_legend(&header, matrix.stop.as_deref(), lines);
    build(&header, &matrix, &legend)
}

/// The header: which device each matrix column is, and the information
/// columns after them.
struct Header {
    line: usize,
    devices: Vec<Device>,
    /// Every device name, to tell a repeated row from an unknown one.
    names: HashSet<String>,
    /// Names of the information columns ("CPU Affinity", ...), in order.
    info: Vec<String>,
}

struct Device {
    name: String,
    /// `Some(n)` for a `GPUn` column, `None` for a NIC.
    gpu: Option<u32>,
}

impl Header {
    fn gpus(&self) -> impl Iterator<Item = (&str, u32)> {
        self.devices.iter().filter_map(|d| Some((d.name.as_str(), d.gpu?)))
    }

    fn nics(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().filter(|d| d.gpu.is_none()).map(|d| d.name.as_str())
    }

    fn gpu_name(&self, i: usize) -> String {
        self.gpus().nth(i).map_or_else(|| format!("GPU #{i}"), |(name, _)| name.to_string())
    }

    fn info_column(&self, name: &str) -> Option<usize> {
        self.info.iter().position(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Skips what may precede the header (blank lines, the command line) and
/// reads the header. `None` when the input ends first.
fn read_header<'a>(lines: &mut impl Iterator<Item = (usize, &'a str)>) -> Option<Result<Header, TopoParseError>> {
    for (line, text) in lines {
        if text.trim().is_empty() || text.contains("nvidia-smi") {
            continue;
        }
        return Some(parse_header(line, text).map_err(|p| p.at(line)));
    }
    None
}

fn parse_header(line: usize, text: &str) -> Result<Header, Problem> {
    let mut cells = Cells::new(text);
    let mut names = Vec::new();
    while let Some(cell) = cells.peek() {
        if is_info_start(cell) {
            break;
        }
        names.push(cell);
        cells.next();
    }
    let first = names.first().copied().unwrap_or_default();
    if gpu_number(first).is_none() {
        return Err(Problem::NotAHeader(text.trim().to_string()));
    }
    // Output pasted without its header starts with a GPU row: its cells are links.
    if names.iter().any(|n| n.parse::<Link>().is_ok()) {
        return Err(Problem::RowBeforeHeader(first.to_string()));
    }
    let mut devices = Vec::with_capacity(names.len());
    let mut seen = HashSet::with_capacity(names.len());
    for name in names {
        if !seen.insert(name.to_string()) {
            return Err(Problem::DuplicateColumn(name.to_string()));
        }
        let gpu = match gpu_number(name) {
            Some(Ok(n)) => Some(n),
            Some(Err(())) => return Err(Problem::GpuIndexTooLarge(name.to_string())),
            None => None,
        };
        devices.push(Device { name: name.to_string(), gpu });
    }
    Ok(Header { line, devices, names: seen, info: info_names(cells.rest()) })
}

/// Whether a header word starts the information columns rather than naming
/// a device: "CPU Affinity", "NUMA Affinity", "GPU NUMA ID".
fn is_info_start(word: &str) -> bool {
    ["CPU", "NUMA", "GPU"].iter().any(|w| word.eq_ignore_ascii_case(w))
}

/// `Some(Ok(n))` for a `GPUn` label, `Some(Err(()))` when n does not fit,
/// `None` for anything else.
fn gpu_number(label: &str) -> Option<Result<u32, ()>> {
    let digits = label.strip_prefix("GPU")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().map_err(|_| ()))
}

/// The information column names. Tab-separated headers give them whole;
/// space-aligned ones split "CPU Affinity" into two words, so known names
/// are put back together.
fn info_names(rest: &str) -> Vec<String> {
    const KNOWN: [&[&str]; 3] = [&["CPU", "Affinity"], &["NUMA", "Affinity"], &["GPU", "NUMA", "ID"]];
    if rest.contains('\t') {
        return info_cells(rest).into_iter().map(str::to_string).collect();
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let mut names = Vec::new();
    let mut at = 0;
    while let Some(tail) = words.get(at..).filter(|t| !t.is_empty()) {
        let known = KNOWN.iter().find(|k| tail.starts_with(k));
        let taken = known.map_or(1, |k| k.len());
        names.push(tail.iter().take(taken).copied().collect::<Vec<_>>().join(" "));
        at += taken;
    }
    names
}

/// The information cells after a row's links. With tabs, empty cells keep
/// their place; with spaces they cannot be seen, so later cells move left
/// (harmless in practice: only trailing cells are ever empty there).
fn info_cells(rest: &str) -> Vec<&str> {
    if !rest.contains('\t') {
        return rest.split_whitespace().collect();
    }
    let mut cells = rest.split('\t').map(str::trim);
    // Before the first tab is only the gap after the last link, unless the
    // separators were mixed.
    let first = cells.next().filter(|c| !c.is_empty());
    first.into_iter().chain(cells).collect()
}

/// Whitespace-separated words of a line, with access to the unread rest.
/// Link cells are single words in both layouts, so they are read this way.
#[derive(Clone, Copy)]
struct Cells<'a> {
    rest: &'a str,
}

impl<'a> Cells<'a> {
    fn new(text: &'a str) -> Self {
        Cells { rest: text }
    }

    fn peek(&self) -> Option<&'a str> {
        let mut ahead = *self;
        ahead.next()
    }

    fn rest(&self) -> &'a str {
        self.rest
    }
}

impl<'a> Iterator for Cells<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.rest.trim_start();
        if text.is_empty() {
            self.rest = text;
            return None;
        }
        let end = text.find(char::is_whitespace).unwrap_or(text.len());
        let (word, rest) = text.split_at(end);
        self.rest = rest;
        Some(word)
    }
}

/// One matrix row, its links split by the kind of column.
struct Row<'a> {
    line: usize,
    /// Links to each GPU, in header order.
    gpus: Vec<Link>,
    /// Links to each NIC, in header order.
    nics: Vec<Link>,
    info: Vec<&'a str>,
}

struct Matrix<'a> {
    gpu_rows: Vec<Row<'a>>,
    /// NIC rows, by the NIC's position among the header's NICs.
    nic_rows: Vec<(usize, Row<'a>)>,
    /// The line that ended the matrix (a legend heading), if any.
    stop: Option<String>,
}

/// Reads the rows up to the legend or the end: first every GPU row in header
/// order, then any NIC rows.
fn read_matrix<'a>(
    header: &Header,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
    last_line: usize,
) -> Result<Matrix<'a>, TopoParseError> {
    let gpu_names: Vec<&str> = header.gpus().map(|(name, _)| name).collect();
    let mut matrix = Matrix { gpu_rows: Vec::new(), nic_rows: Vec::new(), stop: None };
    let mut end_line = last_line;
    for (line, text) in lines.by_ref() {
        if text.trim().is_empty() {
            continue;
        }
        if is_legend_heading(text) {
            matrix.stop = Some(text.trim().to_string());
            end_line = line;
            break;
        }
        read_row(header, &gpu_names, &mut matrix, line, text).map_err(|p| p.at(line))?;
    }
    if let Some(missing) = gpu_names.get(matrix.gpu_rows.len()) {
        let problem = Problem::MissingRows {
            found: matrix.gpu_rows.len(),
            expected: gpu_names.len(),
            missing: missing.to_string(),
        };
        return Err(problem.at(end_line));
    }
    Ok(matrix)
}

/// "Legend:" and "NIC Legend:" end the matrix.
fn is_legend_heading(text: &str) -> bool {
    text.trim_end().ends_with("Legend:")
}

/// Reads one row and files it as the next GPU row or as a NIC row.
fn read_row<'a>(
    header: &Header,
    gpu_names: &[&str],
    matrix: &mut Matrix<'a>,
    line: usize,
    text: &'a str,
) -> Result<(), Problem> {
    let mut cells = Cells::new(text);
    let label = cells.next().unwrap_or_default();
    if let Some(expected) = gpu_names.get(matrix.gpu_rows.len()) {
        if label != *expected {
            let found = label.to_string();
            return Err(Problem::UnexpectedRow { expected: expected.to_string(), found });
        }
        let row = read_links(header, label, line, &mut cells)?;
        matrix.gpu_rows.push(row);
        return Ok(());
    }
    let nic = header.nics().position(|n| n == label);
    let Some(nic) = nic else {
        return Err(match header.names.contains(label) {
            true => Problem::DuplicateRow(label.to_string()),
            false => Problem::UnknownRow(label.to_string()),
        });
    };
    if matrix.nic_rows.iter().any(|(seen, _)| *seen == nic) {
        return Err(Problem::DuplicateRow(label.to_string()));
    }
    let row = read_links(header, label, line, &mut cells)?;
    matrix.nic_rows.push((nic, row));
    Ok(())
}

/// Reads a row's link cells, one per header device, and its information cells.
fn read_links<'a>(header: &Header, label: &str, line: usize, cells: &mut Cells<'a>) -> Result<Row<'a>, Problem> {
    let expected = header.devices.len();
    let too_few = |found| Problem::CellCount { label: label.to_string(), found, expected };
    let mut row = Row { line, gpus: Vec::new(), nics: Vec::new(), info: Vec::new() };
    for (found, device) in header.devices.iter().enumerate() {
        let cell = cells.next().ok_or_else(|| too_few(found))?;
        let link = match cell.parse::<Link>() {
            Ok(link) => link,
            // A row cut short runs into its CPU affinity or NUMA node.
            Err(_) if looks_like_info(cell) => return Err(too_few(found)),
            Err(err) => {
                return Err(Problem::BadLink { column: device.name.clone(), err });
            }
        };
        match device.gpu {
            Some(_) => row.gpus.push(link),
            None => row.nics.push(link),
        }
    }
    // Counted on a copy, so that `cells` still starts at the information cells.
    let extra = (*cells).take_while(|c| c.parse::<Link>().is_ok()).count();
    if extra > 0 {
        return Err(too_few(expected + extra));
    }
    row.info = info_cells(cells.rest());
    Ok(row)
}

/// Information cells start with a digit ("0-19,40-59", "3") or are "N/A".
fn looks_like_info(cell: &str) -> bool {
    cell == "N/A" || cell.starts_with(|c: char| c.is_ascii_digit())
}

/// Device names from the "NIC Legend:" section ("NIC0: mlx5_bond_0"), by
/// header NIC name. The rest of the legend explains the link names and is
/// skipped.
fn read_nic_legend<'a>(
    header: &Header,
    stop: Option<&str>,
    lines: impl Iterator<Item = (usize, &'a str)>,
) -> HashMap<String, String> {
    let is_nic_heading = |t: &str| t.trim().eq_ignore_ascii_case("NIC Legend:");
    let mut names = HashMap::new();
    let mut in_section = stop.is_some_and(is_nic_heading);
    for (_, text) in lines {
        if !in_section {
            in_section = is_nic_heading(text);
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }
        let entry = text.split_once(':').map(|(k, v)| (k.trim(), v.trim()));
        match entry {
            Some((nic, name)) if header.nics().any(|n| n == nic) && !name.is_empty() => {
                names.insert(nic.to_string(), name.to_string());
            }
            // Whatever a later driver prints after the section is not ours.
            _ => break,
        }
    }
    names
}

/// Assembles the topology from the rows and checks it.
fn build(header: &Header, matrix: &Matrix, legend: &HashMap<String, String>) -> Result<GpuTopology, TopoParseError> {
    let mut gpus = Vec::with_capacity(matrix.gpu_rows.len());
    for ((_, index), row) in header.gpus().zip(&matrix.gpu_rows) {
        gpus.push(gpu_device(header, index, row).map_err(|p| p.at(row.line))?);
    }
    let links = matrix.gpu_rows.iter().map(|r| r.gpus.clone()).collect();
    let nics = nic_devices(header, matrix, legend)?;
    let topology = GpuTopology { gpus, links, nics };
    topology.validate().map_err(|e| locate(header, matrix, e))?;
    Ok(topology)
}

fn gpu_device(header: &Header, index: u32, row: &Row) -> Result<GpuDevice, Problem> {
    let info = |name| {
        let cell = header.info_column(name).and_then(|i| row.info.get(i).copied());
        cell.filter(|c| !c.is_empty() && *c != "N/A")
    };
    let numa_node = match info("NUMA Affinity") {
        None => None,
        Some(c) if c.bytes().all(|b| b.is_ascii_digit()) => {
            Some(c.parse().map_err(|_| Problem::BadNuma(c.to_string()))?)
        }
        Some(c) => return Err(Problem::BadNuma(c.to_string())),
    };
    Ok(GpuDevice { index, numa_node, cpu_affinity: info("CPU Affinity").map(str::to_string), ..GpuDevice::default() })
}

/// One NIC per NIC column, its links read down that column of the GPU rows
/// (NIC rows may be missing) and checked against the NIC's row when present.
fn nic_devices(
    header: &Header,
    matrix: &Matrix,
    legend: &HashMap<String, String>,
) -> Result<Vec<NicDevice>, TopoParseError> {
    let mut nics: Vec<NicDevice> = header
        .nics()
        .map(|name| NicDevice {
            name: legend.get(name).cloned().unwrap_or_else(|| name.to_string()),
            gpu_links: Vec::with_capacity(matrix.gpu_rows.len()),
        })
        .collect();
    for (gpu, row) in matrix.gpu_rows.iter().enumerate() {
        for ((nic, name), link) in nics.iter_mut().zip(header.nics()).zip(&row.nics) {
            if *link == Link::Own {
                let problem = Problem::OwnLinkToOther { row: header.gpu_name(gpu), column: name.to_string() };
                return Err(problem.at(row.line));
            }
            nic.gpu_links.push(*link);
        }
    }
    for (nic, row) in &matrix.nic_rows {
        let (Some(device), Some(name)) = (nics.get(*nic), header.nics().nth(*nic)) else {
            continue;
        };
        check_nic_row(header, name, &device.gpu_links, row).map_err(|p| p.at(row.line))?;
    }
    Ok(nics)
}

/// A NIC row must agree with what the GPU rows say about that NIC.
fn check_nic_row(header: &Header, nic: &str, from_gpus: &[Link], row: &Row) -> Result<(), Problem> {
    let mut pairs = from_gpus.iter().zip(&row.gpus).enumerate();
    match pairs.find(|(_, (a, b))| a != b) {
        None => Ok(()),
        Some((gpu, (gpu_says, nic_says))) => Err(Problem::NicMismatch {
            nic: nic.to_string(),
            gpu: header.gpu_name(gpu),
            nic_says: *nic_says,
            gpu_says: *gpu_says,
        }),
    }
}

/// Ties a failed `validate()` to the row it is about, in the header's names.
fn locate(header: &Header, matrix: &Matrix, err: TopologyError) -> TopoParseError {
    let line_of = |i: usize| matrix.gpu_rows.get(i).map_or(header.line, |r| r.line);
    match err {
        TopologyError::Diagonal(i) => Problem::Diagonal(header.gpu_name(i)).at(line_of(i)),
        TopologyError::OwnOffDiagonal(i, j) => {
            let problem = Problem::OwnLinkToOther { row: header.gpu_name(i), column: header.gpu_name(j) };
            problem.at(line_of(i))
        }
        // Found at (i, j) with i < j: row j is the one contradicting an earlier row.
        TopologyError::Asymmetric(i, j, i_says, j_says) => {
            let problem = Problem::Asymmetric {
                row: header.gpu_name(j),
                column: header.gpu_name(i),
                row_says: j_says,
                column_says: i_says,
            };
            problem.at(line_of(j))
        }
        other => Problem::Topology(other).at(header.line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    use phalanx_core::topology::model::Link::{Node, NvLink, Own, Phb, Pix, Pxb, Sys};

    const FIXTURES: [&str; 5] = [
        "dgx-a100-nvswitch.txt",
        "dgx1-v100-hybrid-cube-mesh.txt",
        "hgx-h100-nvswitch.txt",
        "pcie-8x-rtx4090-two-sockets.txt",
        "pcie-a100-nvlink-bridge-pairs.txt",
    ];

    fn fixture(name: &str) -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nvidia-smi-topo/");
        std::fs::read_to_string(format!("{dir}{name}")).unwrap()
    }

    fn parsed(name: &str) -> GpuTopology {
        parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn numa(t: &GpuTopology) -> Vec<Option<u32>> {
        t.gpus.iter().map(|g| g.numa_node).collect()
    }

    fn nic<'t>(t: &'t GpuTopology, name: &str) -> &'t [Link] {
        let nic = t.nics.iter().find(|n| n.name == name);
        &nic.unwrap_or_else(|| panic!("no NIC {name}")).gpu_links
    }

    fn nic_names(t: &GpuTopology) -> Vec<&str> {
        t.nics.iter().map(|n| n.name.as_str()).collect()
    }

    /// Every off-diagonal GPU pair has this link.
    fn all_pairs(t: &GpuTopology, link: Link) -> bool {
        let n = t.gpus.len();
        (0..n).all(|i| (0..n).all(|j| t.links[i][j] == if i == j { Own } else { link }))
    }

    #[test]
    fn dgx1_v100_hybrid_cube_mesh() {
        let t = parsed("dgx1-v100-hybrid-cube-mesh.txt");
        assert_eq!(t.gpus.len(), 8);
        assert_eq!(t.gpus.iter().map(|g| g.index).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
        assert_eq!(t.links[0][3], NvLink(2));
        assert_eq!(t.links[0][1], NvLink(1));
        assert_eq!(t.links[0][5], Sys);
        assert_eq!(t.links[7][5], NvLink(1));
        // No NUMA column at all.
        assert_eq!(numa(&t), vec![None; 8]);
        assert_eq!(t.gpus[0].cpu_affinity.as_deref(), Some("0-19,40-59"));
        assert_eq!(t.gpus[7].cpu_affinity.as_deref(), Some("20-39,60-79"));
        assert_eq!(nic_names(&t), ["mlx5_0", "mlx5_2", "mlx5_1", "mlx5_3"]);
        assert_eq!(nic(&t, "mlx5_0"), [Pix, Pix, Phb, Phb, Sys, Sys, Sys, Sys]);
        assert_eq!(nic(&t, "mlx5_3"), [Sys, Sys, Sys, Sys, Phb, Phb, Pix, Pix]);
    }

    #[test]
    fn dgx_a100_nvswitch_with_missing_nic_rows() {
        let t = parsed("dgx-a100-nvswitch.txt");
        assert_eq!(t.gpus.len(), 8);
        assert!(all_pairs(&t, NvLink(12)));
        assert_eq!(numa(&t), [3, 3, 1, 1, 7, 7, 5, 5].map(Some));
        assert_eq!(t.gpus[0].cpu_affinity.as_deref(), Some("48-63,176-191"));
        assert_eq!(t.gpus[6].cpu_affinity.as_deref(), Some("80-95,208-223"));
        // Ten NIC columns, three NIC rows: the rest come from the GPU rows.
        let names: Vec<String> = (0..10).map(|i| format!("NIC{i}")).collect();
        assert_eq!(nic_names(&t), names);
        assert_eq!(nic(&t, "NIC0"), [Pxb, Pxb, Sys, Sys, Sys, Sys, Sys, Sys]);
        assert_eq!(nic(&t, "NIC7"), [Sys, Sys, Sys, Sys, Sys, Sys, Pxb, Pxb]);
        assert_eq!(nic(&t, "NIC9"), [Sys; 8]);
    }

    #[test]
    fn hgx_h100_nvswitch_with_command_line_and_empty_cells() {
        let t = parsed("hgx-h100-nvswitch.txt");
        assert_eq!(t.gpus.len(), 8);
        assert!(all_pairs(&t, NvLink(18)));
        assert_eq!(numa(&t), [0, 0, 0, 0, 1, 1, 1, 1].map(Some));
        assert_eq!(t.gpus[0].cpu_affinity.as_deref(), Some("0-55,112-167"));
        assert_eq!(t.gpus[4].cpu_affinity.as_deref(), Some("56-111,168-223"));
        assert_eq!(t.nics.len(), 10);
        assert_eq!(nic(&t, "NIC5"), [Sys, Sys, Sys, Pix, Sys, Sys, Sys, Sys]);
        assert_eq!(nic(&t, "NIC4"), [Sys; 8]);
    }

    #[test]
    fn rtx4090_pcie_two_sockets_with_nic_legend() {
        let t = parsed("pcie-8x-rtx4090-two-sockets.txt");
        assert_eq!(t.gpus.len(), 8);
        for i in 0..8 {
            for j in (0..8).filter(|&j| j != i) {
                let expected = if i / 4 == j / 4 { Pix } else { Sys };
                assert_eq!(t.links[i][j], expected, "GPU{i}-GPU{j}");
            }
        }
        assert_eq!(numa(&t), [0, 0, 0, 0, 1, 1, 1, 1].map(Some));
        assert_eq!(t.gpus[3].cpu_affinity.as_deref(), Some("0-35,72-107"));
        // The NIC Legend names NIC0.
        assert_eq!(nic_names(&t), ["mlx5_bond_0"]);
        assert_eq!(nic(&t, "mlx5_bond_0"), [Pix, Pix, Pix, Pix, Sys, Sys, Sys, Sys]);
    }

    #[test]
    fn a100_pcie_nvlink_pairs_space_aligned() {
        let t = parsed("pcie-a100-nvlink-bridge-pairs.txt");
        assert_eq!(t.gpus.len(), 8);
        assert!(t.nics.is_empty());
        assert_eq!(t.links[0][1], NvLink(12));
        assert_eq!(t.links[0][2], Node);
        assert_eq!(t.links[0][4], Sys);
        assert_eq!(t.links[6][7], NvLink(12));
        assert_eq!(numa(&t), [0, 0, 0, 0, 1, 1, 1, 1].map(Some));
        assert_eq!(t.gpus[0].cpu_affinity.as_deref(), Some("0-31,64-95"));
        assert_eq!(t.gpus[7].cpu_affinity.as_deref(), Some("32-63,96-127"));
    }

    /// Tabs expanded to 8-column stops, as a terminal shows them.
    fn expand_tabs(text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            let mut column = 0;
            for c in line.chars() {
                if c == '\t' {
                    let width = 8 - column % 8;
                    out.extend(std::iter::repeat_n(' ', width));
                    column += width;
                } else {
                    out.push(c);
                    column += 1;
                }
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn layouts_and_line_endings_do_not_change_the_result() {
        for name in FIXTURES {
            let text = fixture(name);
            let expected = parsed(name);
            assert_eq!(parse(&expand_tabs(&text)), Ok(expected.clone()), "{name} space-aligned");
            assert_eq!(parse(&text.replace('\n', "\r\n")), Ok(expected), "{name} with CRLF");
        }
    }

    /// Two GPUs and a NIC, tab-separated, for the malformed cases.
    const SMALL: &str = "\tGPU0\tGPU1\tNIC0\tCPU Affinity\tNUMA Affinity\n\
                         GPU0\t X \tNV4\tPIX\t0-7\t0\n\
                         GPU1\tNV4\t X \tSYS\t8-15\t1\n\
                         NIC0\tPIX\tSYS\t X\n";

    #[test]
    fn the_small_case_parses() {
        let t = parse(SMALL).unwrap();
        assert_eq!(t.links, [[Own, NvLink(4)], [NvLink(4), Own]]);
        assert_eq!(numa(&t), [Some(0), Some(1)]);
        assert_eq!(nic(&t, "NIC0"), [Pix, Sys]);
    }

    #[rstest]
    #[case::empty("", 1, "no header")]
    #[case::only_blank_lines("\n  \n\t\n", 3, "no header")]
    #[case::only_the_command("nvidia-smi topo -m\n", 1, "no header")]
    #[case::text_instead_of_header("hello\n", 1, "expected the header")]
    #[case::no_header("GPU0\t X \tNV4\nGPU1\tNV4\t X \n", 1, "GPU0 row before the header")]
    #[case::no_header_after_command("nvidia-smi topo -m\nGPU0  X  NV4\nGPU1 NV4 X\n", 2, "GPU0 row before the header")]
    #[case::duplicate_column("\tGPU0\tGPU0\n", 1, "column GPU0 twice")]
    #[case::huge_gpu_number("\tGPU99999999999\n", 1, "GPU number too large")]
    #[case::too_few_cells(
        "\tGPU0\tGPU1\tNIC0\tCPU Affinity\n\
         GPU0\t X \tNV4\tPIX\t0-7\n\
         GPU1\tNV4\t8-15\n",
        3,
        "GPU1 row has 1 link cells, header names 3 devices"
    )]
    #[case::too_few_cells_at_end_of_line("\tGPU0\tGPU1\nGPU0\t X\n", 2, "GPU0 row has 1 link cells")]
    #[case::too_many_cells("\tGPU0\tGPU1\nGPU0\t X\tNV1\tNV1\n", 2, "GPU0 row has 3 link cells")]
    #[case::unknown_link("\tGPU0\tGPU1\nGPU0\t X\tNV1\nGPU1\tFOO\t X\n", 3, "column GPU0: unknown link \"FOO\"")]
    #[case::asymmetric(
        "\tGPU0\tGPU1\tGPU2\n\
         GPU0\t X\tNV1\tSYS\n\
         GPU1\tNV1\t X\tSYS\n\
         GPU2\tSYS\tPIX\t X\n",
        4,
        "column GPU1: GPU2 row says PIX, but the GPU1 row says SYS"
    )]
    #[case::not_x_on_the_diagonal("\tGPU0\tGPU1\nGPU0\tSYS\tSYS\nGPU1\tSYS\t X\n", 2, "GPU0: a GPU's link to itself")]
    #[case::x_off_the_diagonal("\tGPU0\tGPU1\nGPU0\t X\t X\nGPU1\t X\t X\n", 2, "X (a device's link to itself)")]
    #[case::non_gpu_row_in_matrix(
        "\tGPU0\tGPU1\tNIC0\nGPU0\t X\tNV1\tPIX\nNIC0\tPIX\tSYS\t X\nGPU1\tNV1\t X\tSYS\n",
        3,
        "expected the GPU1 row, found a row labelled \"NIC0\""
    )]
    #[case::garbage_row_in_matrix("\tGPU0\nGPU0\t X\nhello world\n", 3, "\"hello\" is not a NIC")]
    #[case::gpu_rows_out_of_order("\tGPU0\tGPU1\nGPU1\tNV1\t X\n", 2, "expected the GPU0 row")]
    #[case::missing_gpu_row("\tGPU0\tGPU1\nGPU0\t X\tNV1\n\nLegend:\n", 4, "after 1 of 2 GPU rows (GPU1")]
    #[case::missing_gpu_row_at_end("\tGPU0\tGPU1\nGPU0\t X\tNV1\n", 2, "after 1 of 2 GPU rows")]
    #[case::duplicate_nic_row("\tGPU0\tNIC0\nGPU0\t X\tPIX\nNIC0\tPIX\t X\nNIC0\tPIX\t X\n", 4, "second NIC0 row")]
    #[case::duplicate_gpu_row("\tGPU0\tNIC0\nGPU0\t X\tPIX\nGPU0\t X\tPIX\n", 3, "second GPU0 row")]
    #[case::nic_row_disagrees(
        "\tGPU0\tNIC0\nGPU0\t X\tPIX\nNIC0\tSYS\t X\n",
        3,
        "column GPU0: NIC0 row says SYS, but the GPU0 row says PIX"
    )]
    #[case::x_between_gpu_and_nic(
        "\tGPU0\tNIC0\nGPU0\t X\t X\n",
        2,
        "X (a device's link to itself) between GPU0 and NIC0"
    )]
    #[case::bad_numa(
        "\tGPU0\tCPU Affinity\tNUMA Affinity\nGPU0\t X\t0-7\tzero\n",
        2,
        "expected a NUMA node number or N/A, found \"zero\""
    )]
    fn malformed_input_is_an_error_on_its_line(#[case] text: &str, #[case] line: usize, #[case] message: &str) {
        let err = parse(text).expect_err("should not parse");
        assert_eq!(err.line, line, "{err}");
        assert!(err.message.contains(message), "{err:?} should say {message:?}");
    }

    #[test]
    fn more_than_64_gpus_is_an_error_on_the_header() {
        let n = 65;
        let names: Vec<String> = (0..n).map(|i| format!("GPU{i}")).collect();
        let mut text = format!("\t{}\n", names.join("\t"));
        for (i, name) in names.iter().enumerate() {
            let cells: Vec<&str> = (0..n).map(|j| if i == j { "X" } else { "SYS" }).collect();
            text.push_str(&format!("{name}\t{}\n", cells.join("\t")));
        }
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.message.contains("more than phalanx supports"), "{err}");
    }

    #[test]
    fn missing_and_na_information_cells_are_none() {
        let text = "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\nGPU0\t X\tPIX\tN/A\tN/A\nGPU1\tPIX\t X\n";
        let t = parse(text).unwrap();
        assert_eq!(t.gpus[0], GpuDevice { index: 0, ..GpuDevice::default() });
        assert_eq!(t.gpus[1], GpuDevice { index: 1, ..GpuDevice::default() });
    }

    #[test]
    fn nic_legend_stops_at_an_entry_it_cannot_place() {
        let text = format!("{SMALL}\nNIC Legend:\n\n  NIC0: mlx5_0\n  NIC7: mlx5_7\n  NIC0: ignored\n");
        assert_eq!(nic_names(&parse(&text).unwrap()), ["mlx5_0"]);
    }

    /// The invariants of any outcome: a topology that validates, or an error
    /// on a line of the input.
    fn check_outcome(text: &str) {
        match parse(text) {
            Ok(t) => assert_eq!(t.validate(), Ok(())),
            Err(e) => {
                let lines = text.lines().count().max(1);
                assert!((1..=lines).contains(&e.line), "line {} of {lines}: {e}", e.line);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Delete(usize),
        Duplicate(usize),
        Truncate(usize, usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            any::<usize>().prop_map(Edit::Delete),
            any::<usize>().prop_map(Edit::Duplicate),
            (any::<usize>(), 0..200usize).prop_map(|(l, at)| Edit::Truncate(l, at)),
        ]
    }

    fn apply(text: &str, edits: &[Edit]) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for edit in edits {
            if lines.is_empty() {
                break;
            }
            let n = lines.len();
            match *edit {
                Edit::Delete(l) => drop(lines.remove(l % n)),
                Edit::Duplicate(l) => lines.insert(l % n, lines[l % n].clone()),
                Edit::Truncate(l, at) => lines[l % n] = lines[l % n].chars().take(at).collect(),
            }
        }
        lines.join("\n")
    }

    /// Text made of the pieces the parser looks for, so that it gets past the
    /// first checks more often than arbitrary strings do.
    const TOPO_LIKE: &str = "((GPU[0-9]|NIC[0-9]|mlx5_[0-9]| X |NV[0-9]{1,3}|PIX|PXB|PHB|NODE|SYS|N/A|\
                             CPU Affinity|NUMA Affinity|GPU NUMA ID|Legend:|NIC Legend:|[0-9,-]{1,6}|:)\
                             [\t \n]{0,3}){0,60}";

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            check_outcome(&text);
        }

        #[test]
        fn topology_like_text_never_panics(text in TOPO_LIKE) {
            check_outcome(&text);
        }

        #[test]
        fn damaged_fixtures_never_panic(
            which in 0..FIXTURES.len(),
            edits in prop::collection::vec(edit(), 1..6),
        ) {
            check_outcome(&apply(&fixture(FIXTURES[which]), &edits));
        }
    }

    /// The fuzzer's corpus, run by the ordinary test suite.
    #[test]
    fn fuzz_corpus_never_panics() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/nvidia_smi");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            check_outcome(&String::from_utf8_lossy(&bytes));
            count += 1;
        }
        assert!(count >= FIXTURES.len(), "only {count} files in {dir}");
    }
}

#[cfg(test)]
mod graph_tests {
    //! The graphs the core builds from real `nvidia-smi topo -m` outputs.
    use phalanx_core::topology::graph::*;
    use phalanx_core::topology::model::GpuTopology;

    use super::parse;

    fn fixture(name: &str) -> GpuTopology {
        let path = format!("{}/tests/fixtures/nvidia-smi-topo/{name}", env!("CARGO_MANIFEST_DIR"));
        parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    const ALL: [&str; 5] = [
        "dgx1-v100-hybrid-cube-mesh.txt",
        "dgx-a100-nvswitch.txt",
        "hgx-h100-nvswitch.txt",
        "pcie-8x-rtx4090-two-sockets.txt",
        "pcie-a100-nvlink-bridge-pairs.txt",
    ];

    #[test]
    fn on_every_fixture_the_graph_agrees_with_the_link_matrix() {
        let table = LinkBandwidth::default();
        for name in ALL {
            let topo = fixture(name);
            let graph = TopologyGraph::build(&topo);
            let bw = graph.bandwidth_matrix(&table);
            for (i, row) in topo.links.iter().enumerate() {
                for (j, link) in row.iter().enumerate() {
                    // NVLink pairs may also share a PCIe path; the faster link counts.
                    let expected = table.of_link(*link);
                    assert_eq!(bw[i][j], expected, "{name}: GPU{i}-GPU{j} is {link}");
                }
            }
        }
    }

    #[test]
    fn sockets_switches_and_nics_are_recovered() {
        let table = LinkBandwidth::default();
        let count = |g: &TopologyGraph, v: Vertex| g.graph.node_weights().filter(|w| **w == v).count();

        let rtx = TopologyGraph::build(&fixture("pcie-8x-rtx4090-two-sockets.txt"));
        assert_eq!(rtx.gpu_sockets(), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(count(&rtx, Vertex::PcieSwitch), 2, "one switch per socket; GPUs 0-3 share theirs with the NIC");
        assert_eq!(rtx.nearest_nics(&table)[0], Some(0));

        let a100 = TopologyGraph::build(&fixture("dgx-a100-nvswitch.txt"));
        assert_eq!(count(&a100, Vertex::NvSwitch), 1);
        assert_eq!(a100.gpu_sockets(), vec![3, 3, 1, 1, 7, 7, 5, 5]);
        let nics = a100.nearest_nics(&table);
        assert_eq!((nics[0], nics[2], nics[7]), (Some(0), Some(2), Some(6)));

        let dgx1 = TopologyGraph::build(&fixture("dgx1-v100-hybrid-cube-mesh.txt"));
        assert_eq!(count(&dgx1, Vertex::NvSwitch), 0, "the cube mesh is direct links");
        assert_eq!(
            dgx1.graph.edge_weights().filter(|e| matches!(e, Edge::NvLink(_))).count(),
            16,
            "four NVLink peers per GPU"
        );
        let mlx = dgx1.nearest_nics(&table);
        assert_eq!(dgx1.graph[dgx1.nics[mlx[0].unwrap()]], Vertex::Nic("mlx5_0".into()));

        let pairs = TopologyGraph::build(&fixture("pcie-a100-nvlink-bridge-pairs.txt"));
        assert_eq!(pairs.gpu_sockets(), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert!(pairs.to_dot().contains("NV12"));
    }
}
