"""The statistics catalog: each analysis as a function of a federation (any
:class:`fedtally.analyses.Analyses`) built from secure sums of sufficient statistics, and
registered by ``@catalog_method`` (:mod:`fedtally.methods.registry`): the catalog offers
every registered function of every module here."""
