//! Typed handles to node outputs, and what a node may be placed after (one handle, a slice, a tuple).

use std::fmt::Debug;
use std::marker::PhantomData;

use super::Value;
#[cfg(doc)]
use super::{GraphBuilder, GraphOutput, PendingNode};

/// A typed reference to a node's output, from [`GraphBuilder::input`] or [`PendingNode::after`].
///
/// Handles are cheap to copy. They belong to the builder that made them; using one in another builder is
/// reported by [`GraphOutput::build`].
pub struct Handle<T> {
    pub(super) graph: u64,
    pub(super) node: usize,
    pub(super) _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle<{}>(#{})", std::any::type_name::<T>(), self.node)
    }
}

/// The route a branch chose, from [`GraphBuilder::branch`]; nodes follow a route with [`PendingNode::on`].
pub struct BranchHandle<R> {
    pub(super) handle: Handle<R>,
}

impl<R> Clone for BranchHandle<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for BranchHandle<R> {}
impl<R> Debug for BranchHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BranchHandle<{}>(#{})", std::any::type_name::<R>(), self.handle.node)
    }
}

/// The handles a node is added after: one `&Handle<T>` (the node's input is `T`), a tuple of up to eight
/// (its input is the tuple of their types), or a slice of handles of one type, for fan-in decided at run time
/// (its input is a `Vec`). Values are cloned into each node that needs them.
///
/// ```
/// use slm_agents::graph::Graph;
///
/// let mut g = Graph::builder::<u32>();
/// let n = g.input();
/// let text = g.add(|n: u32| async move { Ok::<_, std::io::Error>(n.to_string()) }).after(&n);
/// // A tuple of handles gives the node a tuple, in the same order.
/// let both = g.add(|(n, s): (u32, String)| async move { Ok::<_, std::io::Error>(format!("{n}/{s}")) }).after((&n, &text));
/// # let _ = g.output(both).build().unwrap();
/// ```
#[diagnostic::on_unimplemented(
    message = "a node can only be added after a `&Handle<T>` or a tuple of `&Handle<_>`s",
    label = "not handles"
)]
pub trait Deps {
    /// The node input these handles make.
    type Output: Send + 'static;
    #[doc(hidden)]
    fn handles(&self) -> Vec<(u64, usize)>;
    #[doc(hidden)]
    fn gather(values: &[Value]) -> Option<Self::Output>;
}

impl<T: Clone + Send + Sync + 'static> Deps for &Handle<T> {
    type Output = T;
    fn handles(&self) -> Vec<(u64, usize)> {
        vec![(self.graph, self.node)]
    }
    fn gather(values: &[Value]) -> Option<T> {
        values.first()?.downcast_ref::<T>().cloned()
    }
}

impl<T: Clone + Send + Sync + 'static> Deps for &[Handle<T>] {
    type Output = Vec<T>;
    fn handles(&self) -> Vec<(u64, usize)> {
        self.iter().map(|h| (h.graph, h.node)).collect()
    }
    fn gather(values: &[Value]) -> Option<Vec<T>> {
        values.iter().map(|v| v.downcast_ref::<T>().cloned()).collect()
    }
}

macro_rules! tuple_deps {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Clone + Send + Sync + 'static),+> Deps for ($(&Handle<$name>,)+) {
            type Output = ($($name,)+);
            fn handles(&self) -> Vec<(u64, usize)> {
                vec![$((self.$idx.graph, self.$idx.node)),+]
            }
            fn gather(values: &[Value]) -> Option<Self::Output> {
                Some(($(values.get($idx)?.downcast_ref::<$name>()?.clone(),)+))
            }
        }
    };
}
tuple_deps!(A 0);
tuple_deps!(A 0, B 1);
tuple_deps!(A 0, B 1, C 2);
tuple_deps!(A 0, B 1, C 2, D 3);
tuple_deps!(A 0, B 1, C 2, D 3, E 4);
tuple_deps!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_deps!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_deps!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
