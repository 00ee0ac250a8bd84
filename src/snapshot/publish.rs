//! One post as a publisher sends it between snapshots (`POST /v1/posts`): the fields of a
//! `posts.jsonl` line and its embedding, checked by the same rules as a snapshot's line and
//! `posts.npy` row, so a post cannot enter live that a snapshot would refuse.

use serde::Serialize;

use super::error::Issues;
use super::load::{RowDefect, prepare_row};
use super::records::parse_posts;
use super::{Metric, Post};

/// The field that carries the embedding beside the record's own fields.
pub const EMBEDDING_FIELD: &str = "embedding";

/// A post to publish, validated; under cosine its vector is normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPost {
    pub post: Post,
    pub vector: Vec<f32>,
}

/// What is wrong with one field of a post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// A path such as `kind`, `hashtags[2]`, `stats.views` or `embedding[7]`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Validates `item`, a JSON object with the fields of a `posts.jsonl` record and an
/// `embedding` of `dim` numbers, for a model with `metric`. Every problem found is returned,
/// each naming its field.
pub fn parse_new_post(
    item: serde_json::Value,
    dim: usize,
    metric: Metric,
) -> Result<NewPost, Vec<FieldProblem>> {
    let problem = |field: &str, message: String| FieldProblem {
        field: field.to_string(),
        message,
    };
    let serde_json::Value::Object(mut fields) = item else {
        return Err(vec![problem(
            "post",
            format!(
                "expected a JSON object describing a post, got {}",
                json_kind(&item)
            ),
        )]);
    };
    let mut problems = Vec::new();
    let vector = match fields.remove(EMBEDDING_FIELD) {
        None => {
            problems.push(problem(
                EMBEDDING_FIELD,
                format!("missing: the post's embedding, an array of {dim} numbers"),
            ));
            None
        }
        Some(value) => match embedding(&value, dim, metric) {
            Ok(vector) => Some(vector),
            Err(p) => {
                problems.push(p);
                None
            }
        },
    };
    // The record's fields are checked by the snapshot's own parser, as one line.
    let line = serde_json::to_vec(&serde_json::Value::Object(fields))
        .expect("a JSON value always serialises");
    let mut issues = Issues::default();
    let mut parsed = parse_posts("post", &line, &mut issues);
    if !issues.is_empty() {
        problems.extend(issues.into_error().issues().iter().map(|issue| {
            problem(
                issue.field.as_deref().unwrap_or("post"),
                issue.message.clone(),
            )
        }));
    }
    match (problems.is_empty(), parsed.records.pop(), vector) {
        (true, Some(post), Some(vector)) => Ok(NewPost { post, vector }),
        _ => Err(problems),
    }
}

fn embedding(
    value: &serde_json::Value,
    dim: usize,
    metric: Metric,
) -> Result<Vec<f32>, FieldProblem> {
    let problem = |field: String, message: String| FieldProblem { field, message };
    let serde_json::Value::Array(values) = value else {
        return Err(problem(
            EMBEDDING_FIELD.into(),
            format!(
                "expected an array of {dim} numbers, got {}",
                json_kind(value)
            ),
        ));
    };
    if values.len() != dim {
        return Err(problem(
            EMBEDDING_FIELD.into(),
            format!(
                "has {} values, the model's dimension is {dim}",
                values.len()
            ),
        ));
    }
    let mut vector = Vec::with_capacity(dim);
    for (i, v) in values.iter().enumerate() {
        match v.as_f64() {
            Some(x) => vector.push(x as f32),
            None => {
                return Err(problem(
                    format!("{EMBEDDING_FIELD}[{i}]"),
                    format!("expected a number, got {}", json_kind(v)),
                ));
            }
        }
    }
    prepare_row(&mut vector, Some(metric)).map_err(|defect| match defect {
        RowDefect::NonFinite { column, .. } => problem(
            format!("{EMBEDDING_FIELD}[{column}]"),
            "is out of the range of a 32-bit float".into(),
        ),
        RowDefect::Zero => problem(
            EMBEDDING_FIELD.into(),
            "is a zero vector, which has no direction under the cosine metric".into(),
        ),
    })?;
    Ok(vector)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item() -> serde_json::Value {
        json!({
            "id": "p_new", "author": "a_1", "lang": "EN", "hashtags": ["cats"],
            "kind": "organic", "created_at": 1_700_000_000,
            "embedding": [3.0, 4.0]
        })
    }

    #[test]
    fn a_valid_post_is_normalised_under_cosine_and_kept_under_dot() {
        let post = parse_new_post(item(), 2, Metric::Cosine).unwrap();
        assert_eq!(post.post.id, "p_new");
        assert_eq!(post.post.lang, "en");
        assert_eq!(post.vector, vec![0.6, 0.8]);
        let post = parse_new_post(item(), 2, Metric::Dot).unwrap();
        assert_eq!(post.vector, vec![3.0, 4.0]);
    }

    fn fields(item: serde_json::Value, dim: usize) -> Vec<String> {
        parse_new_post(item, dim, Metric::Cosine)
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn every_problem_names_its_field() {
        assert_eq!(fields(item(), 3), ["embedding"]);
        let mut bad = item();
        bad["kind"] = json!("advert");
        bad["hashtags"] = json!(["cats", "Not Normal"]);
        bad["embedding"] = json!([1.0, "x"]);
        assert_eq!(fields(bad, 2), ["embedding[1]", "kind"]);
        let mut bad = item();
        bad["hashtags"] = json!(["cats", "Not Normal"]);
        bad["embedding"] = json!([0.0, 0.0]);
        assert_eq!(fields(bad, 2), ["embedding", "hashtags[1]"]);
        let mut bad = item();
        bad.as_object_mut().unwrap().remove("embedding");
        bad["surprise"] = json!(1);
        assert_eq!(fields(bad, 2), ["embedding", "surprise"]);
        let mut bad = item();
        bad["embedding"] = json!([1e39, 0.0]);
        assert_eq!(fields(bad, 2), ["embedding[0]"]);
        assert_eq!(fields(json!([1, 2]), 2), ["post"]);
    }
}
