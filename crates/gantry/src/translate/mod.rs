//! Unpaired image-to-image translation: U-GAT-IT (ICLR 2020) with gantry's discriminator
//! plug-ins. The FQ paper's third system is U-GAT-IT with FQ in its global discriminators; here
//! the discriminators implement [`crate::models::Discriminator`], so FQ, AdaptiveMix, DiffAugment
//! and ADA attach to them through the same [`crate::plugins::Critic`] as to a GAN's.
//!
//! [`nets`] holds the networks; [`objective`] what one iteration minimises.

pub mod nets;
pub mod objective;
