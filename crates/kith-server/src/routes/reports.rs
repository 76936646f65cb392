//! Verified reports of one message (the checks: `crate::safety::reports`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use kith_proto::*;

use crate::error::ApiResult;
use crate::extract::{AuthedDevice, Body};
use crate::safety::reports;
use crate::state::AppState;

/// Report one received message to this server's admins. Only that message is revealed.
#[utoipa::path(post, path = "/v1/reports", tag = "safety", security(("bearer" = [])),
    request_body = ReportRequest,
    responses(
        (status = 201, description = "Recorded", body = ReportResponse),
        (status = 200, description = "Reported by this account already: nothing new recorded (`repeated`)", body = ReportResponse),
        (status = 400, description = "invalid_report: the tag, commitment or signature does not verify", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "not_a_member: only a recipient can report a message", body = ErrorBody),
        (status = 404, description = "unknown_conversation", body = ErrorBody),
    ))]
pub async fn report(
    State(state): State<AppState>,
    me: AuthedDevice,
    Body(req): Body<ReportRequest>,
) -> ApiResult<(StatusCode, Json<ReportResponse>)> {
    let id = req.conversation_id.clone();
    let recorded = reports::report(&state, &me, id, req).await?;
    // A repeat is said, not silently dropped: the first report and its reason stand.
    let status = if recorded.new { StatusCode::CREATED } else { StatusCode::OK };
    let answer = ReportResponse { report_id: recorded.report_id, repeated: !recorded.new };
    Ok((status, Json(answer)))
}
