"""Invented names and short texts for the sample data.

The company and people names are made up. Texts come in three tones (positive,
neutral, negative) so that sentiment measures have something to find.
"""

from __future__ import annotations

COMPANY_WORDS = (
    "Amber", "Birch", "Cedar", "Cobalt", "Copper", "Driftwood", "Ember", "Falcon",
    "Granite", "Harbor", "Indigo", "Juniper", "Keystone", "Lumen", "Maple", "Meridian",
    "Nimbus", "Orchid", "Pinecrest", "Quartz", "Redwood", "Sable", "Saltmarsh",
    "Tidewater", "Umber", "Vantage", "Willow", "Zephyr",
)  # fmt: skip

COMPANY_TRADES = (
    "Analytics", "Logistics", "Health", "Foods", "Robotics", "Learning", "Media",
    "Energy", "Freight", "Labs", "Retail", "Finance", "Studios", "Systems",
    "Outfitters", "Clinics", "Works", "Partners",
)  # fmt: skip

INDUSTRIES = (
    "software", "retail", "healthcare", "financial_services", "manufacturing",
    "education", "media", "logistics",
)  # fmt: skip

REGIONS = ("north_america", "emea", "apac", "latam")

#: Customer success managers as (owner id, name); the accounts file stores the id.
OWNERS = (
    ("CSM-01", "Priya Raman"),
    ("CSM-02", "Tomás Ortega"),
    ("CSM-03", "Hannah Berg"),
    ("CSM-04", "Kwame Mensah"),
    ("CSM-05", "Mei Lin"),
    ("CSM-06", "Lucas Moreau"),
)

#: Ticket subjects with the sentence that describes the problem.
TICKET_TOPICS = (
    ("Export to CSV times out", "Exports of large reports stop after a few minutes."),
    (
        "SSO login fails for new users",
        "New colleagues get an error after the SSO step.",
    ),
    ("Dashboard loads slowly", "The main dashboard takes almost a minute to open."),
    ("Question about our invoice", "The latest invoice lists more seats than we use."),
    ("Integration sync stopped", "The CRM integration has not synced since yesterday."),
    ("How do I schedule a report?", "We want the weekly report sent every Monday."),
    ("Cannot invite a colleague", "The invite e-mail never arrives for one address."),
    ("Workflow run failed", "A nightly workflow ended with an error halfway."),
    ("Request for more chart types", "Our analysts would like stacked area charts."),
    ("Permissions for a new team", "We need a role that can view but not edit."),
)

TICKET_OPENINGS = {
    "positive": (
        "Hi team, thanks for the quick help last time.",
        "Hello, a small one:",
    ),
    "neutral": ("Hi,", "Hello support,"),
    "negative": (
        "This is the third time this month.",
        "We are getting frustrated with this.",
    ),
}

TICKET_CLOSINGS = {
    "positive": ("Thanks a lot!", "No rush, much appreciated."),
    "neutral": ("Please advise.", "Let us know what you need from us."),
    "negative": (
        "This blocks our team and we are questioning the renewal.",
        "Please escalate, this is not acceptable.",
    ),
}

#: NPS comments by category (promoters 9-10, passives 7-8, detractors 0-6).
NPS_COMMENTS = {
    "promoter": (
        "Saves our analysts hours every week.",
        "Great support team and a product that keeps getting better.",
        "The workflow automation is excellent.",
        "Everyone on the team uses it daily.",
    ),
    "passive": (
        "Does the job, but reporting could be more flexible.",
        "Good product, a bit expensive for what we use.",
        "Fine overall, the integrations need work.",
    ),
    "detractor": (
        "Too slow and too many sync errors.",
        "We barely use it since our champion left.",
        "Support takes days to answer.",
        "Hard to justify the price at renewal.",
    ),
}

#: CSM note texts by the sentiment the CSM recorded, 1 (very negative) to 5.
NOTE_TEXTS = {
    1: (
        "Customer is evaluating alternatives; renewal at serious risk.",
        "Escalation call: the sponsor is unhappy with repeated outages.",
    ),
    2: (
        "Usage dropped after their reorganisation; asked for a roadmap review.",
        "Champion has left and the new contact is not engaged yet.",
    ),
    3: (
        "Routine check-in, no major issues raised.",
        "Walked through the new release; mild interest.",
    ),
    4: (
        "Team likes the new dashboards; planned a training session.",
        "Good call, they asked about connecting their warehouse.",
    ),
    5: (
        "Business review went very well; they want to expand to another team.",
        "Sponsor praised the rollout and agreed to be a reference.",
    ),
}
