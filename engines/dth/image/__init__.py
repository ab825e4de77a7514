"""The image engine: copies container images between Amazon ECR and other registries with skopeo,
skipping every image whose manifest digest the destination already has."""
