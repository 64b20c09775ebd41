"""The statistics catalog: each analysis as a function of a federation (any
:class:`fedtally.analyses.Analyses`) built from secure sums of sufficient statistics, and
registered by ``@catalog_method`` (:mod:`fedtally.methods.registry`): the catalog offers
every registered function of every module here. A method is one module named after it
(the function, its result, its finishing and its Exareme2 adapter); the other modules hold
what several methods share."""
