//! Reading and writing numpy `.npy` files.
