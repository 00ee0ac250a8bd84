//! Who a request is for, as the pipeline sees them: a snapshot user, an onboarded user (a
//! profile), both, or neither.

use std::borrow::Cow;

use crate::profiles::Profile;

/// The viewer of one request.
pub(super) struct Viewer<'a> {
    /// Interest vectors: the user's embedding for a snapshot user; for a user known only by
    /// a profile, one per group of picked hashtags (`Hashtags::interests`). Empty: nothing is
    /// known, and the feed is the non-personal one.
    pub interests: Vec<Cow<'a, [f32]>>,
    /// Norm of each interest (cosine needs it under the `dot` metric).
    pub norms: Vec<f32>,
    /// What the ad search is run with: the interest itself, or the normalised mean of several.
    pub ad_query: Cow<'a, [f32]>,
    /// Hashtags followed: the profile's if there is one, else the snapshot's.
    pub follows: &'a [String],
    /// Languages read: the profile's if there is one, else the snapshot's.
    pub langs: &'a [String],
    /// The user's slot in the user index, if it has met them.
    pub slot: Option<u32>,
    /// Known only by a profile: no snapshot row and no moved embedding.
    pub newcomer: bool,
}

impl<'a> Viewer<'a> {
    pub fn new(
        interests: Vec<Cow<'a, [f32]>>,
        follows: &'a [String],
        langs: &'a [String],
    ) -> Viewer<'a> {
        let norms: Vec<f32> = interests
            .iter()
            .map(|v| crate::index::dot(v, v).sqrt())
            .collect();
        let ad_query = match interests.as_slice() {
            [] => Cow::Borrowed(&[][..]),
            [one] => one.clone(),
            many => {
                let mut mean = vec![0.0f32; many[0].len()];
                for (v, norm) in many.iter().zip(&norms) {
                    for (m, x) in mean.iter_mut().zip(v.iter()) {
                        *m += x / norm.max(f32::MIN_POSITIVE);
                    }
                }
                let norm = crate::index::dot(&mean, &mean).sqrt();
                if norm > 0.0 {
                    mean.iter_mut().for_each(|m| *m /= norm);
                } else {
                    // Opposite interests cancel out: search ads by the first.
                    mean.copy_from_slice(&many[0]);
                }
                Cow::Owned(mean)
            }
        };
        Viewer {
            interests,
            norms,
            ad_query,
            follows,
            langs,
            slot: None,
            newcomer: false,
        }
    }

    /// With interests: the feed is personal.
    pub fn is_personal(&self) -> bool {
        !self.interests.is_empty()
    }

    /// Languages and follows from `profile` when there is one.
    pub fn lists(
        profile: Option<&'a Profile>,
        snapshot: Option<(&'a [String], &'a [String])>,
    ) -> (&'a [String], &'a [String]) {
        match (profile, snapshot) {
            (Some(p), _) => (&p.follows, &p.langs),
            (None, Some(lists)) => lists,
            (None, None) => (&[], &[]),
        }
    }
}
