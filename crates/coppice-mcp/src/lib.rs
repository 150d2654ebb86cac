//! coppice-mcp: MCP tool definitions mapped one to one onto `SandboxManager` operations.
//!
//! Charter: the only crate that knows MCP. It arrives with the MCP work; until then it exports
//! nothing and claims nothing.
#![forbid(unsafe_code)]
