//! The request grammar: which API call a path names (`paths`), and a
//! proxied body's head read without parsing the rest (`parse`): the model,
//! `stream`, usage options, multipart fields. Used by the request stage and
//! by the job runners, which read a stored call the same way.

pub(crate) mod parse;
pub(crate) mod paths;

pub use parse::is_json;
