//! PostgreSQL functions clients call on connect that DataFusion and the pg_catalog crate do not
//! provide: `current_setting(name)` and a PostgreSQL-shaped `version()`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

use super::statement::Settings;

/// The PostgreSQL version we answer as (what pgwire announces in `server_version`).
pub const SERVER_VERSION: &str = "16.6";
/// `server_version_num` of [`SERVER_VERSION`].
pub const SERVER_VERSION_NUM: &str = "160006";

/// The server's default of a setting, as PostgreSQL's `current_setting` would give it here.
pub(crate) fn setting(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "server_version" => SERVER_VERSION,
        "server_version_num" => SERVER_VERSION_NUM,
        "search_path" => "public, metrics",
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "intervalstyle" => "postgres",
        "standard_conforming_strings" => "on",
        "integer_datetimes" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "max_identifier_length" => "63",
        "statement_timeout" => "0",
        "application_name" => "",
        "lc_collate" | "lc_ctype" => "C.UTF-8",
        _ => return None,
    })
}

/// Registers the functions on `ctx`.
pub(crate) fn register(ctx: &SessionContext, settings: Arc<Settings>) {
    let current_setting = create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let lookup = |name: &str| -> Result<String, DataFusionError> {
                settings.get(name).ok_or_else(|| {
                    DataFusionError::Execution(format!(
                        "unrecognized configuration parameter \"{name}\""
                    ))
                })
            };
            match args.first() {
                Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(n)))) => {
                    Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(lookup(n)?))))
                }
                Some(ColumnarValue::Array(a)) => {
                    let names = a.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                        DataFusionError::Execution("current_setting(text)".into())
                    })?;
                    let mut out: Vec<Option<String>> = Vec::with_capacity(names.len());
                    for i in 0..names.len() {
                        out.push(if names.is_null(i) {
                            None
                        } else {
                            Some(lookup(names.value(i))?)
                        });
                    }
                    Ok(ColumnarValue::Array(
                        Arc::new(StringArray::from(out)) as ArrayRef
                    ))
                }
                _ => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
            }
        }),
    );
    ctx.register_udf(current_setting);
    let version = create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(format!(
                "PostgreSQL {SERVER_VERSION} (fleetgate {}, Apache DataFusion SQL)",
                env!("CARGO_PKG_VERSION")
            )))))
        }),
    );
    ctx.register_udf(version);
}
