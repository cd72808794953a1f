//! STUB (being written): the node's CNI configuration written from its podCIDR.
