"""The statistics catalog: each analysis as a function of a federation (any
:class:`fedtally.analyses.Analyses`) built from secure sums of sufficient statistics."""
