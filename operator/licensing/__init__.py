"""The license life cycle (pure), the SubSite's verdict and term arithmetic, shared by
the operator, the kubectl plugin, the storefront and the workers."""
