//! CEL device selectors, evaluated as `resource.k8s.io` defines them: the
//! variable `device` with `driver`, `attributes[domain].name` and
//! `capacity[domain].name`, plus the Kubernetes quantity helpers that
//! capacity comparisons use. Each expression is compiled once.

use std::collections::HashMap;
use std::sync::Arc;

use cel::extractors::This;
use cel::{Context, Program, Value};

use super::device::{AttributeValue, Device};
use crate::quantity::parse_units;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("CEL expression {expression:?} does not compile: {message}")]
    Compile { expression: String, message: String },
    #[error("CEL expression {expression:?} failed on device {device}: {message}")]
    Runtime { expression: String, device: String, message: String },
    #[error("CEL expression {expression:?} gave {value} on device {device}, not a bool")]
    NotBool { expression: String, device: String, value: String },
}

/// Compiled selectors by their text. Expressions are compiled as objects
/// arrive (never during a decision), so evaluation needs no mutation.
pub struct Selectors {
    compiled: HashMap<String, Result<Arc<Program>, SelectorError>>,
    /// The standard library and helpers, built once (it is not cheap).
    root: Context<'static, 'static>,
}

impl Default for Selectors {
    fn default() -> Self {
        Self { compiled: HashMap::new(), root: helpers() }
    }
}

impl std::fmt::Debug for Selectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selectors").field("compiled", &self.compiled.len()).finish()
    }
}

impl Selectors {
    /// Compiles `expression` unless it was compiled before; says whether it compiles.
    pub fn compile(&mut self, expression: &str) -> Result<(), SelectorError> {
        let entry = self.compiled.entry(expression.to_string()).or_insert_with(|| {
            Program::compile(expression)
                .map(Arc::new)
                .map_err(|e| SelectorError::Compile { expression: expression.to_string(), message: e.to_string() })
        });
        entry.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// Whether `device` satisfies every expression.
    pub fn matches(&self, expressions: &[String], device: &Device) -> Verdict {
        for expression in expressions {
            if !self.verdict(expression, device)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether `device` satisfies one expression (compiled here if it was not before).
    pub fn verdict(&self, expression: &str, device: &Device) -> Verdict {
        let program =
            match self.compiled.get(expression) {
                Some(Ok(program)) => Arc::clone(program),
                Some(Err(e)) => return Err(e.clone()),
                None => Arc::new(Program::compile(expression).map_err(|e| SelectorError::Compile {
                    expression: expression.to_string(),
                    message: e.to_string(),
                })?),
            };
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("device", device_value(device));
        match program.execute(&scope) {
            Ok(Value::Bool(verdict)) => Ok(verdict),
            Ok(other) => Err(SelectorError::NotBool {
                expression: expression.to_string(),
                device: device.id.to_string(),
                value: format!("{other:?}"),
            }),
            Err(e) => Err(SelectorError::Runtime {
                expression: expression.to_string(),
                device: device.id.to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// The standard library plus the quantity helpers (capacities are read as
/// integers in base units, so a quantity is one too).
fn helpers() -> Context<'static, 'static> {
    let mut context = Context::default();
    for (name, result) in [
        ("quantity", context.add_function("quantity", quantity)),
        ("compareTo", context.add_function("compareTo", compare_to)),
        ("isGreaterThan", context.add_function("isGreaterThan", |This(a): This<i64>, b: i64| a > b)),
        ("isLessThan", context.add_function("isLessThan", |This(a): This<i64>, b: i64| a < b)),
        ("asInteger", context.add_function("asInteger", |This(a): This<i64>| a)),
    ] {
        // A clash with the standard library would be a programming error found by every test.
        assert!(result.is_ok(), "CEL helper {name} clashes with the standard library");
    }
    context
}

fn quantity(text: Arc<String>) -> Result<i64, cel::ExecutionError> {
    parse_units(&text).map_err(|e| cel::ExecutionError::function_error("quantity", e))
}

fn compare_to(This(a): This<i64>, b: i64) -> i64 {
    a.cmp(&b) as i64
}

/// `device` as CEL sees it.
fn device_value(device: &Device) -> Value {
    let mut attributes: HashMap<String, HashMap<String, Value>> = HashMap::new();
    for (name, value) in &device.attributes {
        let value = match value {
            AttributeValue::Int(v) => Value::Int(*v),
            AttributeValue::Bool(v) => Value::Bool(*v),
            AttributeValue::String(v) | AttributeValue::Version(v) => Value::from(v.as_str()),
        };
        attributes.entry(name.domain.clone()).or_default().insert(name.name.clone(), value);
    }
    let mut capacity: HashMap<String, HashMap<String, Value>> = HashMap::new();
    for (name, amount) in &device.capacity {
        capacity.entry(name.domain.clone()).or_default().insert(name.name.clone(), Value::Int(*amount));
    }
    // A domain the device does not publish reads as empty, so `has(...)` works on it.
    for domain in attributes.keys().chain(capacity.keys()).cloned().collect::<Vec<_>>() {
        attributes.entry(domain.clone()).or_default();
        capacity.entry(domain).or_default();
    }
    let mut fields: HashMap<String, Value> = HashMap::new();
    fields.insert("driver".into(), Value::from(device.id.driver.as_str()));
    fields.insert("attributes".into(), to_value(attributes));
    fields.insert("capacity".into(), to_value(capacity));
    Value::from(fields)
}

fn to_value(by_domain: HashMap<String, HashMap<String, Value>>) -> Value {
    Value::from(by_domain.into_iter().map(|(domain, names)| (domain, Value::from(names))).collect::<HashMap<_, _>>())
}

/// A verdict of one expression on one device.
pub type Verdict = Result<bool, SelectorError>;

/// Every compiled expression's verdict on every device of every node (by
/// the device's position on its node), worked out as expressions and
/// devices arrive so that a decision only looks them up: CEL is far too
/// slow to run for every device of every candidate node of every member.
#[derive(Debug, Default)]
pub struct SelectorVerdicts {
    by_expression: HashMap<String, HashMap<String, Vec<Verdict>>>,
}

impl SelectorVerdicts {
    /// Works out a new expression's verdicts on every node's devices.
    pub fn learn<'a>(
        &mut self,
        selectors: &Selectors,
        expression: &str,
        nodes: impl Iterator<Item = (&'a String, &'a Vec<Device>)>,
    ) {
        if self.by_expression.contains_key(expression) {
            return;
        }
        let by_node = nodes
            .map(|(node, devices)| (node.clone(), devices.iter().map(|d| selectors.verdict(expression, d)).collect()))
            .collect();
        self.by_expression.insert(expression.to_string(), by_node);
    }

    /// Works out every known expression's verdicts on a node's devices anew.
    pub fn relearn_node(&mut self, selectors: &Selectors, node: &str, devices: &[Device]) {
        for (expression, by_node) in &mut self.by_expression {
            if devices.is_empty() {
                by_node.remove(node);
            } else {
                by_node.insert(node.to_string(), devices.iter().map(|d| selectors.verdict(expression, d)).collect());
            }
        }
    }

    /// The expression's verdicts on the node's devices, if learnt.
    pub fn of(&self, expression: &str, node: &str) -> Option<&[Verdict]> {
        self.by_expression.get(expression)?.get(node).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The scheduler that holds them moves between threads.
    const _: fn() = || {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Selectors>();
    };
    use crate::dra::testing::gpu_device;

    fn check(expression: &str) -> Result<bool, SelectorError> {
        let mut selectors = Selectors::default();
        selectors.compile(expression)?;
        selectors.matches(&[expression.to_string()], &gpu_device("gpu-0", 0))
    }

    #[test]
    fn reads_driver_attributes_and_capacity() {
        assert_eq!(check("device.driver == 'gpu.nvidia.com'"), Ok(true));
        assert_eq!(check("device.attributes['gpu.nvidia.com'].productName == 'NVIDIA H100 80GB HBM3'"), Ok(true));
        assert_eq!(check("device.attributes['resource.kubernetes.io'].numaNode == 0"), Ok(true));
        assert_eq!(check("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0"), Ok(true));
        assert_eq!(check("device.capacity['gpu.nvidia.com'].memory.isLessThan(quantity('40Gi'))"), Ok(false));
        assert_eq!(check("has(device.attributes['gpu.nvidia.com'].model)"), Ok(false));
    }

    #[test]
    fn errors_name_the_expression() {
        let err = check("device.driver ==").unwrap_err();
        assert!(matches!(&err, SelectorError::Compile { expression, .. } if expression == "device.driver =="));
        let err = check("device.attributes['gpu.nvidia.com'].nosuch == 1").unwrap_err();
        assert!(matches!(&err, SelectorError::Runtime { device, .. } if device.ends_with("/gpu-0")), "{err}");
        assert!(matches!(check("device.driver").unwrap_err(), SelectorError::NotBool { .. }));
    }
}
