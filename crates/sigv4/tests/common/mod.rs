pub mod suite_vectors;
