//! A set of images with their labels, as every data format loads them.

/// A set of images with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, image after image, each `channels x height x width`.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<i64>,
    /// `[channels, height, width]` of every image.
    pub shape: [usize; 3],
}

impl ImageSet {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        ImageSet {
            images,
            labels,
            shape: self.shape,
        }
    }
}
